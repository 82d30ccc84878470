//! A job's secrets (contract §8, §10): the configuration, the component's image parameters
//! and the stored state are decrypted right before a row runs; every secret found is
//! masked in what berth prints or keeps of the component's output; the `#` values of a
//! state the component wrote are encrypted again before it is saved.
//!
//! The master key file is read only when a job holds a ciphertext, and created only when a
//! state has a secret to encrypt: a job without secrets never touches it.

use std::borrow::Cow;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::JobError;
use crate::contract::config_file;
use crate::contract::{Configuration, JobFile};
use crate::secrets::{self, Ids, Keyring, MIN_MASKED_CHARS, Masker, Scope, SecretsError};

/// An image's `image_parameters`, decrypted, and the secrets among them.
#[derive(Default)]
pub(super) struct ImageParameters {
    pub value: Value,
    pub secrets: Vec<String>,
}

impl std::fmt::Debug for ImageParameters {
    // Never the secrets themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImageParameters({} secrets)", self.secrets.len())
    }
}

/// The keys (once read) and every secret the job has decrypted so far.
#[derive(Debug)]
pub(super) struct Vault {
    key_file: PathBuf,
    ring: Option<Keyring>,
    masker: Masker,
    /// The store is shared by several hosts: the key file must be installed, never made.
    shared: bool,
}

impl Vault {
    pub fn new(key_file: PathBuf) -> Vault {
        Vault {
            key_file,
            ring: None,
            masker: Masker::default(),
            shared: false,
        }
    }

    /// The vault of a job whose store is shared (`true`) by several hosts.
    pub fn for_store(key_file: PathBuf, shared: bool) -> Vault {
        Vault {
            shared,
            ..Vault::new(key_file)
        }
    }

    /// `text` with every secret seen so far hidden.
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.masker.mask(text)
    }

    /// A copy of what masks, for the container's output while the vault is borrowed.
    pub fn masker(&self) -> Masker {
        self.masker.clone()
    }

    /// The image parameters of `job`'s component, decrypted for that component, with the
    /// secrets they hold.
    pub fn open_image_parameters(&mut self, job: &JobFile) -> Result<ImageParameters, JobError> {
        let mut value = Value::Object(job.component.image_parameters.clone());
        let secrets = self.open(&mut value, "component.image_parameters", job)?;
        Ok(ImageParameters { value, secrets })
    }

    /// The `config.json` of an image: `config` decrypted for `job` (the configuration's
    /// owner), with the image's own decrypted `image_parameters`. Refused when a `#` value
    /// of `config` is one of `forbidden`, the image-parameter secrets of every image of
    /// the row: a configuration could otherwise hand them to an image that prints them.
    /// `at` is where `config` sits in the job's configuration (`processors.after[0].`),
    /// for the refusal's path.
    pub fn open_config(
        &mut self,
        job: &JobFile,
        config: &Configuration,
        image_parameters: ImageParameters,
        forbidden: &[String],
        at: &str,
    ) -> Result<Value, JobError> {
        let mut json = config_file::config_json(config, &Map::new(), "run");
        self.open(&mut json, "configuration", job)?;
        secrets::refuse_copied(&json, forbidden, at)?;
        if let Value::Object(map) = &mut json {
            map.insert("image_parameters".to_owned(), image_parameters.value);
        }
        Ok(json)
    }

    /// Decrypts the component's part of a stored state in place.
    pub fn open_state(&mut self, state: &mut Value, job: &JobFile) -> Result<(), JobError> {
        self.open(state, "state", job).map(|_| ())
    }

    /// Encrypts the `#` values of a state the component wrote (bound to the component and
    /// project, not the configuration, as in the original); they are masked from now on.
    pub fn seal_state(&mut self, state: &mut Value, job: &JobFile) -> Result<(), JobError> {
        let plain = secrets::plain_secrets(state);
        if plain.is_empty() {
            return Ok(());
        }
        self.remember(&plain);
        let ring = self.keys(true)?;
        secrets::encrypt_tree(state, Scope::Project, &ids(job), ring)?;
        Ok(())
    }

    /// Decrypts `value` in place and remembers its secrets; returns them.
    fn open(
        &mut self,
        value: &mut Value,
        root: &str,
        job: &JobFile,
    ) -> Result<Vec<String>, JobError> {
        let empty = Keyring::default();
        let ring = if secrets::has_ciphertexts(value) {
            self.keys(false)?
        } else {
            &empty
        };
        let found = secrets::decrypt_tree(value, root, &ids(job), ring)?;
        for path in &found.plain {
            tracing::warn!(
                "{path} is not encrypted: berth passes it as it is (encrypt it with `berth encrypt`)"
            );
        }
        self.remember(&found.secrets);
        Ok(found.secrets)
    }

    fn remember(&mut self, found: &[String]) {
        for secret in found {
            if !self.masker.add(secret) {
                tracing::warn!(
                    "a secret of fewer than {MIN_MASKED_CHARS} characters is not masked in the \
                     component's output"
                );
            }
        }
    }

    fn keys(&mut self, create: bool) -> Result<&Keyring, SecretsError> {
        let ring = match self.ring.take() {
            Some(r) if !(create && r.is_empty()) => r,
            _ if self.shared => Keyring::load_existing(&self.key_file)?,
            _ if create => Keyring::load_or_create(&self.key_file)?,
            _ => Keyring::load(&self.key_file)?,
        };
        Ok(self.ring.insert(ring))
    }
}

fn ids(job: &JobFile) -> Ids<'_> {
    Ids {
        component: &job.component.id,
        project: &job.project_id,
        config: job.config_id.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::job::state;
    use crate::mapping::InputState;
    use crate::storage::StateKey;

    fn job(component: &str) -> JobFile {
        serde_json::from_value(json!({
            "component": {"id": component, "image": "x/y"},
            "config_id": "42",
            "configuration": {"parameters": {}}
        }))
        .unwrap()
    }

    #[test]
    fn a_sealed_state_opens_again_and_is_not_rewritten_when_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("secrets/keys.json");
        let job = job("acme.a");
        let mut vault = Vault::new(key_file.clone());
        let mut written = json!({"#refresh": "rotating-token", "n": 1});
        vault.seal_state(&mut written, &job).unwrap();
        assert!(key_file.exists(), "the first secret to seal makes the key");
        let sealed = written["#refresh"].as_str().unwrap().to_owned();
        assert!(sealed.starts_with("KBC::ProjectSecure::"), "{sealed}");
        assert_eq!(vault.mask("got rotating-token"), "got [hidden]");

        // The next run: the stored state opens to what the component wrote.
        let stored = json!({"component": written, "storage": {"input": {}}});
        let (mut component, _) = state::split(Some(stored.clone()));
        let mut next_vault = Vault::new(key_file);
        next_vault.open_state(&mut component, &job).unwrap();
        assert_eq!(component, json!({"#refresh": "rotating-token", "n": 1}));
        assert_eq!(next_vault.mask("rotating-token"), "[hidden]");
        let previous = state::with_component(stored, &component);
        let key = StateKey {
            component: "acme.a".into(),
            config: "42".into(),
            row: None,
        };
        let again = state::next(key, Some(&previous), Some(component), InputState::default());
        assert!(again.is_none(), "an unchanged state is not written again");

        // Another component cannot read it.
        let (mut component, _) = state::split(Some(json!({"component": {"#refresh": sealed}})));
        let e = Vault::new(dir.path().join("secrets/keys.json"))
            .open_state(&mut component, &self::job("acme.b"))
            .unwrap_err();
        assert_eq!(e.class(), crate::contract::ErrorClass::User);
        assert!(crate::util::chain(&e).contains("state.#refresh"), "{e}");
    }

    #[test]
    fn with_a_shared_store_no_key_is_made_and_the_error_says_how_to_install_one() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("secrets/keys.json");
        let job = job("acme.a");
        let mut vault = Vault::for_store(key_file.clone(), true);
        let mut written = json!({"#refresh": "rotating-token"});
        let e = vault.seal_state(&mut written, &job).unwrap_err();
        assert!(
            !key_file.exists(),
            "a key was made on a host of a shared store"
        );
        assert_eq!(e.class(), crate::contract::ErrorClass::Internal);
        let msg = crate::util::chain(&e);
        assert!(msg.contains("this host uses a shared store"), "{msg}");
        assert!(msg.contains(&key_file.display().to_string()), "{msg}");
        // Installed, it is used.
        Keyring::load_or_create(&key_file).unwrap();
        let mut vault = Vault::for_store(key_file, true);
        vault.seal_state(&mut written, &job).unwrap();
        assert!(written["#refresh"].as_str().unwrap().starts_with("KBC::"));
    }

    #[test]
    fn a_job_without_ciphertexts_never_touches_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        // A key file nobody may use: reading it would fail the job.
        let key_file = dir.path().join("keys.json");
        std::fs::write(&key_file, "not json").unwrap();
        let job = job("acme.a");
        let mut vault = Vault::new(key_file);
        let config: Configuration =
            serde_json::from_value(json!({"parameters": {"#plain": "plain-secret"}})).unwrap();
        let params = vault.open_image_parameters(&job).unwrap();
        let json = vault.open_config(&job, &config, params, &[], "").unwrap();
        assert_eq!(json["parameters"]["#plain"], "plain-secret");
        assert_eq!(vault.mask("x plain-secret"), "x [hidden]");
        let mut state = json!({"n": 1});
        vault.seal_state(&mut state, &job).unwrap();
    }
}
