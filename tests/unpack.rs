//! Unpacking real multi-layer images pulled from a real registry: exact results (checked
//! against umoci, an independent unpacker) and refusal of layers that try to escape.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::json;

/// Three layers exercising whiteouts, an opaque directory, hard links and symlinks.
fn layered_spec() -> ImageSpec {
    let l1 = tar_of(&[
        dir("etc"),
        file("etc/keep", b"kept"),
        file("etc/gone", b"to be whited out"),
        dir("opaque"),
        file("opaque/old1", b"lower"),
        dir("opaque/sub"),
        file("opaque/sub/old2", b"lower"),
        dir("links"),
        file("links/target", b"linked content"),
        Entry::File {
            path: "etc/owned".into(),
            data: b"owned".to_vec(),
            mode: 0o4750,
            uid: 1234,
            gid: 4321,
        },
        dir("replace-me"),
        file("replace-me/inner", b"x"),
    ]);
    let l2 = tar_of(&[
        whiteout("etc/gone"),
        dir("opaque"),
        opaque("opaque"),
        file("opaque/new", b"upper"),
        hardlink("links/hard", "links/target"),
        symlink("links/soft", "target"),
        symlink("links/abs", "/etc/keep"),
        file("replace-me", b"now a file"),
    ]);
    let l3 = tar_of(&[
        file("links/target2", b"second"),
        hardlink("links/hard2", "links/target2"),
        whiteout("links/soft"),
    ]);
    ImageSpec {
        layers: vec![busybox_layer().to_vec(), gzip(&l1), l2, gzip(&l3)],
        cmd: Some(vec!["/bin/true".into()]),
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    }
}

/// The start of the id range the multi-layer test unpacks into.
const SHIFT: u32 = 300_000;

/// The one image stack in the store.
fn stack_dir(cache: &Path) -> std::path::PathBuf {
    let stacks: Vec<_> = fs::read_dir(cache.join("stacks"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(stacks.len(), 1, "expected exactly one image stack");
    stacks[0].path()
}

/// The stored image as a container sees it: its layers merged (as the copy fallback does,
/// and overlayfs would) into a directory under `into`.
fn merged(cache: &Path, into: &Path) -> std::path::PathBuf {
    let stack = berth::image::Stack::open(&stack_dir(cache)).unwrap();
    let root = into.join("merged");
    fs::create_dir(&root).unwrap();
    berth::image::merge_layers(&stack.layers, &root, true).unwrap();
    root
}

#[test]
fn multi_layer_image_unpacks_exactly() {
    require_env!();
    let img = push(&layered_spec(), &unique_repo("layers"), "1.0");
    let b = Berth::new();
    // Owners land moved into the containers' id range, as the container sees them shifted
    // back: the test names the range to know the shift.
    let range = SHIFT.to_string() + ":65536";
    let out = b
        .cmd()
        .args(["--id-range", &range, "pull", &img.reference])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&img.digest), "{stdout}");
    // Each layer in its own directory, whiteouts kept as overlayfs reads them.
    let stack = berth::image::Stack::open(&stack_dir(&b.cache())).unwrap();
    assert_eq!(stack.layers.len(), 4);
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let second = &stack.layers[1]; // top first: l3, l2, l1, busybox
    let gone = fs::symlink_metadata(second.join("etc/gone")).unwrap();
    assert!(
        gone.file_type().is_char_device() && gone.rdev() == 0,
        "{gone:?}"
    );
    assert!(berth::image::is_opaque(&second.join("opaque")));
    assert!(
        !second.join("etc/keep").exists(),
        "a lower layer's file in an upper layer"
    );
    let merged_dir = tempfile::tempdir().unwrap();
    let root = merged(&b.cache(), merged_dir.path());

    // What the layers say, checked directly.
    assert_eq!(fs::read(root.join("etc/keep")).unwrap(), b"kept");
    assert!(!root.join("etc/gone").exists(), "whiteout not applied");
    assert!(!root.join("etc/.wh.gone").exists(), "whiteout marker left");
    assert!(
        !root.join("opaque/old1").exists() && !root.join("opaque/sub").exists(),
        "opaque dir not cleared"
    );
    assert_eq!(fs::read(root.join("opaque/new")).unwrap(), b"upper");
    assert!(!root.join("opaque/.wh..wh..opq").exists());
    let t = fs::metadata(root.join("links/target")).unwrap();
    assert_eq!(
        t.ino(),
        fs::metadata(root.join("links/hard")).unwrap().ino(),
        "hard link broken"
    );
    assert_eq!(t.nlink(), 2);
    assert_eq!(
        fs::metadata(root.join("links/target2")).unwrap().ino(),
        fs::metadata(root.join("links/hard2")).unwrap().ino()
    );
    assert!(
        fs::symlink_metadata(root.join("links/soft")).is_err(),
        "whited-out symlink left"
    );
    assert_eq!(
        fs::read_link(root.join("links/abs")).unwrap(),
        Path::new("/etc/keep")
    );
    assert_eq!(fs::read(root.join("replace-me")).unwrap(), b"now a file");
    let owned = fs::metadata(root.join("etc/owned")).unwrap();
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (SHIFT + 1234, SHIFT + 4321, 0o4750)
    );

    // And the whole tree, against umoci's unpack of the very same layout.
    let umoci_bundle = b.dir.path().join("umoci");
    let out = Command::new("umoci")
        .args(["raw", "unpack", "--image"])
        .arg(format!("{}:1.0", img.layout.path().display()))
        .arg(&umoci_bundle)
        .output()
        .expect("run umoci");
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = describe_shifted_tree(&root, SHIFT);
    let theirs = describe_tree(&umoci_bundle);
    let differ: Vec<_> = ours
        .iter()
        .filter(|(k, v)| theirs.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: berth {v} / umoci {:?}", theirs.get(k)))
        .chain(
            theirs
                .keys()
                .filter(|k| !ours.contains_key(*k))
                .map(|k| format!("{k}: only in umoci")),
        )
        .collect();
    assert!(
        differ.is_empty(),
        "berth and umoci disagree:\n{}",
        differ.join("\n")
    );
}

#[test]
fn a_job_never_modifies_the_cached_rootfs() {
    require_env!();
    let img = push(
        &ImageSpec::script("echo changed > /etc/passwd; rm -f /bin/ls; touch /new-file; echo done"),
        &unique_repo("readonly"),
        "1.0",
    );
    let b = Berth::new();
    let r = b.run_job(&job(&img.reference, json!({}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    let merged_dir = tempfile::tempdir().unwrap();
    let root = merged(&b.cache(), merged_dir.path());
    assert!(
        fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .starts_with("root:")
    );
    assert!(fs::symlink_metadata(root.join("bin/ls")).is_ok());
    assert!(!root.join("new-file").exists());
    b.assert_clean(&[&job_id(&r.json())]);
}

#[test]
fn a_copied_rootfs_lives_beside_the_job_and_runs() {
    require_env!();
    // A copy used to land on berth's 64 MiB noexec runtime tmpfs: nothing could run from it.
    let img = push(
        &ImageSpec::script("echo changed > /etc/passwd; stat -f -c %T /; echo done"),
        &unique_repo("copied"),
        "1.0",
    );
    let b = Berth::new();
    let path = b.write_job(&job(&img.reference, json!({}), json!({})));
    let r = b.run_cmd(&["--copy-rootfs", "run", "--json", path.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("done"), "{}", r.stderr);
    // The root is a directory on the job's disk, not an overlay and not a tmpfs.
    let fs_type = r.stderr.lines().find(|l| !l.contains(' ') && *l != "done");
    assert!(
        fs_type.is_some_and(|t| t != "overlayfs" && t != "tmpfs"),
        "{}",
        r.stderr
    );
    let merged_dir = tempfile::tempdir().unwrap();
    let root = merged(&b.cache(), merged_dir.path());
    assert!(
        fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .starts_with("root:")
    );
    b.assert_clean(&[&job_id(&r.json())]);
}

fn escape_cases(outside: &Path) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "dotdot",
            tar_of(&[Entry::RawFile {
                name: "../escaped".into(),
                data: b"evil".to_vec(),
            }]),
        ),
        (
            "absolute symlink parent",
            tar_of(&[
                symlink("evil", outside.to_str().unwrap()),
                file("evil/planted", b"evil"),
            ]),
        ),
        (
            "relative symlink parent",
            tar_of(&[
                symlink("up", "../../../../../../../.."),
                file("up/tmp/planted", b"evil"),
            ]),
        ),
        (
            "hardlink out",
            tar_of(&[hardlink("h", "../../../../etc/passwd")]),
        ),
    ]
}

#[test]
fn layers_that_try_to_escape_are_refused() {
    require_env!();
    let outside = tempfile::tempdir().unwrap();
    for (name, layer) in escape_cases(outside.path()) {
        let spec = ImageSpec {
            layers: vec![busybox_layer().to_vec(), layer.clone()],
            cmd: Some(vec!["/bin/true".into()]),
            ..Default::default()
        };
        let img = push(&spec, &unique_repo("escape"), "1.0");
        let b = Berth::new();
        let r = b.run_job(&job(&img.reference, json!({}), json!({})));
        let result = r.json();
        assert_eq!(r.status, 3, "{name}: {}", r.stderr);
        let message = result["message"].as_str().unwrap();
        let digest = format!("sha256:{}", sha256(&layer));
        assert!(message.contains("is refused"), "{name}: {message}");
        assert!(
            message.contains(&digest),
            "{name}: message does not name the layer: {message}"
        );
        assert_eq!(
            result["exit_code"],
            serde_json::Value::Null,
            "{name}: the container ran"
        );
        // Nothing written outside, no rootfs cached, nothing half-done left in tmp.
        assert_eq!(
            fs::read_dir(outside.path()).unwrap().count(),
            0,
            "{name}: wrote outside"
        );
        assert!(!b.dir.path().join("escaped").exists() && !b.cache().join("escaped").exists());
        assert!(
            !Path::new("/tmp/planted").exists(),
            "{name}: wrote into the host's /tmp"
        );
        assert_eq!(
            fs::read_dir(b.cache().join("stacks")).unwrap().count(),
            0,
            "{name}"
        );
        let hostile_layer = b.cache().join("layers").join(sha256(&layer));
        assert!(
            !hostile_layer.exists(),
            "{name}: the refused layer was stored"
        );
        assert_eq!(
            fs::read_dir(b.cache().join("tmp")).unwrap().count(),
            0,
            "{name}"
        );
        b.assert_clean(&[]);
    }
}

/// Writes `v` as a NUL-terminated octal tar number filling `field`.
fn octal(field: &mut [u8], v: u64) {
    let text = format!("{v:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(text.as_bytes());
}

/// A gzipped layer with one GNU sparse entry `holes` of `real` bytes whose only data is its
/// last 512 bytes: a few hundred bytes that a tar reader expands to `real` bytes.
fn sparse_layer(real: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_path("holes").unwrap();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(512);
    let gnu = h.as_gnu_mut().unwrap();
    octal(&mut gnu.sparse[0].offset, real - 512);
    octal(&mut gnu.sparse[0].numbytes, 512);
    octal(&mut gnu.realsize, real);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[b'x'; 512]);
    tar.extend_from_slice(&[0; 1024]);
    gzip(&tar)
}

#[test]
fn a_sparse_entry_is_refused_before_it_expands() {
    require_env!();
    let layer = sparse_layer(1 << 30);
    assert!(layer.len() < 1024, "{} bytes", layer.len());
    let spec = ImageSpec {
        layers: vec![busybox_layer().to_vec(), layer.clone()],
        cmd: Some(vec!["/bin/true".into()]),
        ..Default::default()
    };
    let img = push(&spec, &unique_repo("sparse"), "1.0");
    let b = Berth::new();
    // 1 GiB of holes under a 16 MiB budget: refused, whatever the budget.
    let r = b.run_cmd(&["--max-image-bytes", "16777216", "pull", &img.reference]);
    assert_eq!(r.status, 3, "{}", r.stderr);
    let digest = format!("sha256:{}", sha256(&layer));
    assert!(
        r.stderr
            .contains(&format!("layer {digest} cannot be unpacked"))
            && r.stderr.contains("entry holes is a sparse file"),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read_dir(b.cache().join("stacks")).unwrap().count(), 0);
    let big: Vec<_> = walk_tree(&b.cache())
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.len() > 16 << 20))
        .collect();
    assert!(big.is_empty(), "expanded: {big:?}");
}

/// A layer whose one file comes after an extension header of `kind` (PAX records or a GNU
/// long name) of `size` bytes; made of concatenated gzip members (a 1 MiB one repeated), so
/// neither this test nor the layer ever holds the record whole: about `size / 1000` bytes.
fn header_bomb(kind: tar::EntryType, size: u64) -> Vec<u8> {
    const MIB: u64 = 1 << 20;
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path("././@LongLink").unwrap();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h.set_cksum();
    let mut head = h.as_bytes().to_vec();
    let mut fill = size;
    let pax = kind == tar::EntryType::XHeader;
    if pax {
        // One record, "SIZE comment=aaa…\n", SIZE counting the whole record.
        let prefix = format!("{size} comment=");
        head.extend_from_slice(prefix.as_bytes());
        fill -= prefix.len() as u64 + 1;
    }
    let mut layer = gzip(&head);
    let chunk = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b'a'; 1 << 20]).unwrap();
        gz.finish().unwrap()
    };
    while fill >= MIB {
        layer.extend_from_slice(&chunk);
        fill -= MIB;
    }
    let mut tail = vec![b'a'; usize::try_from(fill).unwrap()];
    if pax {
        tail.push(b'\n');
    }
    tail.resize(
        tail.len() + usize::try_from((512 - size % 512) % 512).unwrap(),
        0,
    );
    let mut f = tar::Header::new_gnu();
    f.set_path("f").unwrap();
    f.set_mode(0o644);
    f.set_uid(0);
    f.set_gid(0);
    f.set_mtime(0);
    f.set_size(0);
    f.set_cksum();
    tail.extend_from_slice(f.as_bytes());
    tail.extend_from_slice(&[0; 1024]);
    layer.extend_from_slice(&gzip(&tail));
    layer
}

/// Runs berth with `args`: its exit status, its stderr, and its own peak RSS in KiB (from
/// `wait4`, so no other test's children count).
fn run_measured(b: &Berth, args: &[&str]) -> (i32, String, i64) {
    let stderr = tempfile::NamedTempFile::new().unwrap();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also reports its rusage"
    )]
    let child = b
        .cmd()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills; all zeros is a valid value of it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into the two locals above.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "{}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let text = fs::read_to_string(stderr.path()).unwrap();
    (code, text, usage.ru_maxrss)
}

#[test]
fn oversized_tar_headers_are_refused_without_being_buffered() {
    require_env!();
    // What a pull of a small honest image costs this (unoptimised) build: the bombs may
    // add little to it. (The release build peaks at about half; see docs/benchmarks.md, "Pulls".)
    let honest = push(
        &ImageSpec {
            layers: vec![gzip(&tar_of(&[file("f", b"x")]))],
            cmd: Some(vec!["/bin/true".into()]),
            ..Default::default()
        },
        &unique_repo("header-honest"),
        "1.0",
    );
    let (status, stderr, baseline_kib) = run_measured(&Berth::new(), &["pull", &honest.reference]);
    assert_eq!(status, 0, "{stderr}");
    let kinds = [
        (tar::EntryType::XHeader, "PAX"),
        (tar::EntryType::GNULongName, "GNU long name"),
    ];
    for (kind, what) in kinds {
        let layer = header_bomb(kind, 300_000_000);
        assert!(layer.len() < 512 << 10, "{what}: {} bytes", layer.len());
        let spec = ImageSpec {
            layers: vec![layer.clone()],
            cmd: Some(vec!["/bin/true".into()]),
            ..Default::default()
        };
        let img = push(&spec, &unique_repo("header-bomb"), "1.0");
        let b = Berth::new();
        let (status, stderr, peak_kib) = run_measured(&b, &["pull", &img.reference]);
        assert_eq!(status, 3, "{what}: {stderr}");
        let digest = format!("sha256:{}", sha256(&layer));
        assert!(
            stderr.contains(&format!("layer {digest} cannot be unpacked"))
                && stderr.contains(&format!("a {what} header of 300000000 bytes")),
            "{what}: {stderr}"
        );
        eprintln!(
            "{what}: a 300 MB header in {} bytes of gzip; berth peaked at {peak_kib} KiB \
             ({baseline_kib} KiB pulling an honest image)",
            layer.len()
        );
        assert!(
            peak_kib < baseline_kib + (8 << 10),
            "{what}: berth grew to {peak_kib} KiB, {baseline_kib} KiB for an honest image"
        );
        assert_eq!(fs::read_dir(b.cache().join("layers")).unwrap().count(), 0);
    }
}
