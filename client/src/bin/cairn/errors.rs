//! Errors as the CLI prints them: what the library says happened, and the flag, command or
//! step that fixes it.

use std::error::Error;
use std::io::ErrorKind;

use cairn_client::devnet::DevnetError;
use cairn_client::error::{ClientError, KeyError, Output};

/// The message for a failed command: its context, outermost first, down to the first error
/// the client library raised, which [`explain`] words.
pub(crate) fn render(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for layer in e.chain() {
        // The library's texts already hold their causes' texts: the chain stops there.
        if let Some(text) = explain_any(layer) {
            parts.push(text);
            break;
        }
        parts.push(layer.to_string());
    }
    parts.join(": ")
}

fn explain_any(e: &(dyn Error + 'static)) -> Option<String> {
    if let Some(e) = e.downcast_ref::<ClientError>() {
        Some(explain(e))
    } else if let Some(e) = e.downcast_ref::<KeyError>() {
        Some(explain_key(e))
    } else {
        e.downcast_ref::<DevnetError>().map(explain_devnet)
    }
}

/// A client error, with the fix where the CLI knows one.
pub(crate) fn explain(e: &ClientError) -> String {
    use ClientError as C;
    match e {
        C::NoPeers => {
            "no network given: pass --peer MULTIADDR or --devnet DIR (or set CAIRN_DEVNET)".into()
        }
        C::Unreachable { .. } => format!("{e}; check the addresses and that the nodes run"),
        C::NotEnoughNodes { .. } => format!("{e}: lower --k/--m or add nodes"),
        C::NetworkFull { .. } => format!(
            "{e}; `cairn nodes` shows each node's space (free disk space on the nodes, raise \
             their storage.capacity, or add nodes)"
        ),
        C::Unsigned { .. } => format!("{e}: it may have been tampered with"),
        C::NotAManifest { .. } => format!("{e}; pass the CID `cairn put` printed"),
        C::LeaseNotTaken { .. } => {
            format!("{e}; check the CID with `cairn stat`, and that the nodes holding it run")
        }
        C::NotUtf8(_) => format!("{e}: rename it"),
        C::Write { to, source } if out_of_space(source) => match to {
            Output::File(_) | Output::Dir(_) => {
                format!("{e}: the disk is full: free some space, or write elsewhere with -o")
            }
            _ => format!("{e}: the disk is full"),
        },
        C::Key(k) => explain_key(k),
        _ => e.to_string(),
    }
}

fn explain_key(e: &KeyError) -> String {
    match e {
        KeyError::NotFound(_) => format!("{e}: create one with `cairn key generate`"),
        KeyError::Exists(_) => {
            format!("{e}: `cairn key show` prints it (remove the file to make a new identity)")
        }
        _ => e.to_string(),
    }
}

fn explain_devnet(e: &DevnetError) -> String {
    match e {
        DevnetError::NodeBinary(_) | DevnetError::GatewayBinary(_) => format!(
            "{e}: build it with `cargo build --release --bins` (it must sit next to the cairn binary)"
        ),
        DevnetError::AlreadyRunning { .. } => {
            format!("{e}: stop it with Ctrl-C in its terminal, or pass another --dir")
        }
        DevnetError::NoState { dir, source } if source.kind() == ErrorKind::NotFound => format!(
            "{e}; is a devnet running there? start one with `cairn devnet --dir {}`",
            dir.display()
        ),
        _ => e.to_string(),
    }
}

/// Whether a write failed for want of space: the disk is full (`ENOSPC`), or the user's quota
/// is used up (`EDQUOT`).
pub(crate) fn out_of_space(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

/// Whether `e` is stdout having been closed by its reader (`cairn get CID -o - | head -c 100`):
/// the reader has what it wanted, and that is no failure.
pub(crate) fn output_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ClientError>(),
            Some(ClientError::Write { to: Output::Stdout, source })
                if source.kind() == ErrorKind::BrokenPipe
        )
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use rustix::io::Errno;

    use super::*;

    fn os(errno: Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(errno.raw_os_error())
    }

    fn write_to(path: &str, source: std::io::Error) -> ClientError {
        ClientError::Write {
            to: Output::File(PathBuf::from(path)),
            source,
        }
    }

    #[test]
    fn a_full_disk_is_told_by_its_errno_not_its_text() {
        assert!(out_of_space(&os(Errno::NOSPC)));
        assert!(out_of_space(&os(Errno::DQUOT)));
        for other in [Errno::IO, Errno::ACCESS, Errno::ROFS, Errno::PIPE] {
            assert!(!out_of_space(&os(other)), "{other:?}");
        }
        // Text that says so is not enough.
        assert!(!out_of_space(&std::io::Error::other(
            "No space left on device (os error 28)"
        )));
        // What the kernel says on a real write to a full device.
        let mut full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let e = full
            .write_all(b"x")
            .and_then(|()| full.flush())
            .unwrap_err();
        assert!(out_of_space(&e), "{e:?}");
    }

    #[test]
    fn a_full_disk_while_writing_a_file_says_what_to_do() {
        let full = explain(&write_to("out.bin", os(Errno::NOSPC)));
        assert!(full.starts_with("writing out.bin: "), "{full}");
        assert!(
            full.ends_with("the disk is full: free some space, or write elsewhere with -o"),
            "{full}"
        );
        let denied = explain(&write_to("out.bin", os(Errno::ACCESS)));
        assert!(!denied.contains("disk is full"), "{denied}");
    }

    #[test]
    fn only_a_closed_stdout_is_a_quiet_end() {
        let closed = |to: Output, kind: ErrorKind| {
            output_closed(&anyhow::Error::from(ClientError::Write {
                to,
                source: std::io::Error::from(kind),
            }))
        };
        assert!(closed(Output::Stdout, ErrorKind::BrokenPipe));
        assert!(!closed(Output::Stdout, ErrorKind::PermissionDenied));
        assert!(!closed(
            Output::File(PathBuf::from("-")),
            ErrorKind::BrokenPipe
        ));
        assert!(!closed(Output::Stream("the output"), ErrorKind::BrokenPipe));
    }

    #[test]
    fn a_cause_is_printed_once_with_the_fix_after_it() {
        let e = anyhow::Error::from(DevnetError::NoState {
            dir: PathBuf::from("/nowhere"),
            source: os(Errno::NOENT),
        });
        let text = render(&e);
        assert_eq!(
            text.matches("os error 2").count(),
            1,
            "the cause once: {text}"
        );
        assert!(
            text.starts_with("reading /nowhere/devnet.json: ")
                && text.ends_with("start one with `cairn devnet --dir /nowhere`"),
            "{text}"
        );
        // Context added by the CLI comes first.
        let e = anyhow::Error::from(ClientError::NoPeers).context("joining");
        assert_eq!(
            render(&e),
            "joining: no network given: pass --peer MULTIADDR or --devnet DIR (or set CAIRN_DEVNET)"
        );
        let e = anyhow::Error::from(ClientError::Key(KeyError::NotFound(PathBuf::from("k"))));
        assert_eq!(
            render(&e),
            "uploader key k not found: create one with `cairn key generate`"
        );
    }
}
