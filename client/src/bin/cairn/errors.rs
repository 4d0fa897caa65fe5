//! How a failed command ends.

use cairn_client::error::ClientError;

/// Whether `e` is stdout (or the output pipe) having been closed by its reader.
pub(crate) fn output_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ClientError>(),
            Some(ClientError::Io { what, source })
                if what == "writing output" && source.kind() == std::io::ErrorKind::BrokenPipe
        )
    })
}
