//! Where read bytes go: a writer, or a channel.

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::{ClientError, Output, writing};

/// Where read bytes go: a writer, or a channel (the gateway streams into its HTTP body).
pub trait Sink: Send {
    /// Takes the next verified bytes of the read.
    fn put(&mut self, bytes: Bytes) -> impl Future<Output = Result<(), ClientError>> + Send;
}

/// A [`Sink`] over an [`AsyncWrite`].
#[derive(Debug)]
pub struct WriteSink<'a, W>(pub &'a mut W);

impl<W: AsyncWrite + Unpin + Send> Sink for WriteSink<'_, W> {
    async fn put(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        self.0
            .write_all(&bytes)
            .await
            .map_err(writing(Output::Stream("the output")))
    }
}

impl Sink for tokio::sync::mpsc::Sender<Bytes> {
    async fn put(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        self.send(bytes).await.map_err(|_| {
            writing(Output::Stream("the output channel"))(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the reader went away",
            ))
        })
    }
}
