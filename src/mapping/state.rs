//! The state a component leaves in `/data/out/state.json` (contract §11), read from the
//! data folder without following any link the container may have put in its way.

use std::path::Path;

use serde_json::Value;

use super::MappingError;
use crate::confined;

/// The largest state read.
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// The state the component left in `out/state.json` of the data folder `data` (berth's own
/// path; `out` and below are the container's). `None` clears the state: the file is
/// missing, empty or blank, `null` or `[]`. Not JSON, larger than 64 MiB, or not a regular
/// file (a symlink, a FIFO, a directory — also `out` itself) is the component's error.
pub fn read_out_state(data: &Path) -> Result<Option<Value>, MappingError> {
    let bytes = match confined::Dir::open(data)?.read_to_end("out/state.json", MAX_STATE_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(MappingError::State)?;
    Ok(match value {
        Value::Null => None,
        Value::Array(a) if a.is_empty() => None,
        v => Some(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn data() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("out")).unwrap();
        d
    }

    fn with_state(content: &str) -> Result<Option<Value>, MappingError> {
        let d = data();
        fs::write(d.path().join("out/state.json"), content).unwrap();
        read_out_state(d.path())
    }

    fn user_error(r: Result<Option<Value>, MappingError>) -> String {
        let e = r.unwrap_err();
        assert!(e.class() == crate::contract::ErrorClass::User, "{e}");
        e.to_string()
    }

    /// A host directory with a state in it, which no component may hand to berth.
    fn host_state() -> tempfile::TempDir {
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("state.json"), r#"{"stolen": true}"#).unwrap();
        host
    }

    #[test]
    fn missing_blank_null_and_empty_list_clear_the_state() {
        let d = data();
        assert_eq!(read_out_state(d.path()).unwrap(), None);
        fs::remove_dir(d.path().join("out")).unwrap();
        assert_eq!(read_out_state(d.path()).unwrap(), None, "no out/ at all");
        for blank in ["", " \n\t", "null", " [] "] {
            assert_eq!(with_state(blank).unwrap(), None, "{blank:?}");
        }
        assert_eq!(
            with_state(r#"{"count": 2}"#).unwrap(),
            Some(json!({"count": 2}))
        );
        assert_eq!(with_state("[1]").unwrap(), Some(json!([1])));
        assert_eq!(with_state("{}").unwrap(), Some(json!({})));
    }

    #[test]
    fn invalid_json_is_the_components_error() {
        let e = user_error(with_state("not json"));
        assert!(e.starts_with("invalid out/state.json: expected"), "{e}");
    }

    #[test]
    fn a_state_linked_to_the_host_is_not_read() {
        let host = host_state();
        let d = data();
        fs::remove_dir(d.path().join("out")).unwrap();
        symlink(host.path(), d.path().join("out")).unwrap();
        let e = user_error(read_out_state(d.path()));
        assert!(e.starts_with("out is a symlink"), "{e}");

        let d = data();
        symlink(
            host.path().join("state.json"),
            d.path().join("out/state.json"),
        )
        .unwrap();
        let e = user_error(read_out_state(d.path()));
        assert!(e.starts_with("out/state.json is a symlink"), "{e}");
    }

    #[test]
    fn fifos_directories_and_huge_states_are_refused_promptly() {
        let d = data();
        nix::unistd::mkfifo(
            &d.path().join("out/state.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = d.path().to_owned();
        std::thread::spawn(move || {
            let r = read_out_state(&path).map_err(|e| {
                (
                    e.class() == crate::contract::ErrorClass::User,
                    e.to_string(),
                )
            });
            tx.send(r).unwrap();
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO state blocked");
        let (user, e) = r.unwrap_err();
        assert!(user && e.starts_with("out/state.json is a FIFO"), "{e}");

        let d = data();
        fs::create_dir(d.path().join("out/state.json")).unwrap();
        let e = user_error(read_out_state(d.path()));
        assert_eq!(e, "out/state.json is a directory, not a regular file");

        let d = data();
        let f = fs::File::create(d.path().join("out/state.json")).unwrap();
        f.set_len(MAX_STATE_BYTES + 1).unwrap();
        let e = user_error(read_out_state(d.path()));
        assert!(e.contains("out/state.json is larger than"), "{e}");
    }
}
