//! The node's identity: a libp2p ed25519 key pair kept in `DATA_DIR/identity.key` (mode 0600).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// File name of the key inside a data directory.
pub const KEY_FILE: &str = "identity.key";

/// Errors reading or writing the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error(
        "{path} does not hold a libp2p key ({reason}); restore it from backup, or move it away and run `cairn-node init` for a new identity"
    )]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key exists already (init refuses to overwrite).
    #[error("{path} already exists: this data directory is initialised (remove it to start over)")]
    Exists {
        /// The key file.
        path: PathBuf,
    },
}

/// Creates a new ed25519 identity at `path` with mode 0600; refuses to overwrite.
pub fn create(path: &Path) -> Result<Keypair, IdentityError> {
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| IdentityError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                IdentityError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io(e)
            }
        })?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(keypair)
}

/// Loads the identity at `path`, warning if other users can read it.
pub fn load(path: &Path) -> Result<Keypair, IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "identity key is readable by other users: chmod 600 it");
    }
    let bytes = std::fs::read(path).map_err(io)?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let k = create(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load(&path).unwrap().public(), k.public());
        assert!(matches!(create(&path), Err(IdentityError::Exists { .. })));
        std::fs::write(dir.path().join("bad"), b"nope").unwrap();
        assert!(matches!(
            load(&dir.path().join("bad")),
            Err(IdentityError::Malformed { .. })
        ));
    }
}
