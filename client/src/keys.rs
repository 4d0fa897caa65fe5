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

/// What went wrong with the uploader key at a path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No key file there.
    #[error("uploader key {} not found", .0.display())]
    NotFound(PathBuf),
    /// [`generate`] found a key there already, and left it.
    #[error("uploader key {} already exists", .0.display())]
    Exists(PathBuf),
    /// The file is not a key.
    #[error("uploader key {}: not a Cairn key (expected 64 hex characters)", .0.display())]
    Malformed(PathBuf),
    /// Reading, writing or creating it failed.
    #[error("uploader key {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

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

fn key_io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError {
    let path = path.to_path_buf();
    move |source| KeyError::Io { path, source }
}

/// Creates a new key at `path` (mode 0600); refuses to overwrite.
pub fn generate(path: &Path) -> Result<SigningKey, KeyError> {
    let seed = libp2p::identity::Keypair::generate_ed25519()
        .try_into_ed25519()
        .map_err(|e| key_io(path)(std::io::Error::other(e)))?
        .secret();
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(seed.as_ref());
    let key = SigningKey::from_bytes(&bytes);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(key_io(path))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists(path.to_path_buf())
            } else {
                key_io(path)(e)
            }
        })?;
    writeln!(file, "{}", hex(&bytes)).map_err(key_io(path))?;
    file.sync_all().map_err(key_io(path))?;
    Ok(key)
}

/// Loads the key at `path`.
pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            KeyError::NotFound(path.to_path_buf())
        } else {
            key_io(path)(e)
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
        return Err(KeyError::Malformed(path.to_path_buf()));
    }
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| KeyError::Malformed(path.to_path_buf()))?;
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
        assert!(matches!(generate(&path), Err(KeyError::Exists(p)) if p == path));
        assert_eq!(
            load(&path).unwrap().to_bytes(),
            k.to_bytes(),
            "left as it was"
        );
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "zz").unwrap();
        assert!(matches!(load(&bad), Err(KeyError::Malformed(p)) if p == bad));
        // Right length, not hex (the second check).
        std::fs::write(&bad, "z".repeat(64)).unwrap();
        assert!(matches!(load(&bad), Err(KeyError::Malformed(_))));
        let none = dir.path().join("none");
        assert!(matches!(load(&none), Err(KeyError::NotFound(p)) if p == none));
        // A directory where the file should be: an I/O error, not "not found".
        assert!(matches!(load(dir.path()), Err(KeyError::Io { .. })));
    }
}
