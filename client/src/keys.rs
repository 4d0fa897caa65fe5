//! The uploader's identity: an ed25519 key that signs every manifest it publishes.
//!
//! Stored as 64 hex characters (the 32-byte secret) in a file of mode 0600, by default
//! `$CAIRN_KEY`, else `$XDG_CONFIG_HOME/cairn/key`, else `~/.config/cairn/key`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_chunker::manifest::hex;
use ed25519_dalek::SigningKey;

use crate::error::ClientError;

/// Where the key lives unless told otherwise.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_KEY") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("cairn").join("key")
}

fn key_err(path: &Path, reason: impl Into<String>) -> ClientError {
    ClientError::Key {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Creates a new key at `path` (mode 0600); refuses to overwrite.
pub fn generate(path: &Path) -> Result<SigningKey, ClientError> {
    let seed = libp2p::identity::Keypair::generate_ed25519()
        .try_into_ed25519()
        .map_err(|e| key_err(path, e.to_string()))?
        .secret();
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(seed.as_ref());
    let key = SigningKey::from_bytes(&bytes);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| key_err(path, e.to_string()))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                key_err(path, "already exists; `cairn key show` prints it (remove the file to make a new identity)")
            } else {
                key_err(path, e.to_string())
            }
        })?;
    writeln!(file, "{}", hex(&bytes)).map_err(|e| key_err(path, e.to_string()))?;
    file.sync_all().map_err(|e| key_err(path, e.to_string()))?;
    Ok(key)
}

/// Loads the key at `path`.
pub fn load(path: &Path) -> Result<SigningKey, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            key_err(path, "not found: create one with `cairn key generate`")
        } else {
            key_err(path, e.to_string())
        }
    })?;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} is readable by other users: chmod 600 it",
            path.display()
        );
    }
    let text = text.trim();
    let mut bytes = [0u8; 32];
    if text.len() != 64 {
        return Err(key_err(
            path,
            "not a Cairn key (expected 64 hex characters)",
        ));
    }
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| key_err(path, "not a Cairn key (expected 64 hex characters)"))?;
    }
    Ok(SigningKey::from_bytes(&bytes))
}

/// The public half, as people see it.
pub fn public_hex(key: &SigningKey) -> String {
    hex(&key.verifying_key().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        let k = generate(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load(&path).unwrap().to_bytes(), k.to_bytes());
        assert!(
            generate(&path)
                .unwrap_err()
                .to_string()
                .contains("already exists")
        );
        std::fs::write(dir.path().join("bad"), "zz").unwrap();
        assert!(load(&dir.path().join("bad")).is_err());
        assert!(
            load(&dir.path().join("none"))
                .unwrap_err()
                .to_string()
                .contains("cairn key generate")
        );
    }
}
