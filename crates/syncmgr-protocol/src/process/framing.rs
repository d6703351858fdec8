//! Bytes on the child's pipes: the line decoders of stdout and stderr, and the
//! writer task that owns stdin.
//!
//! Both decoders are bounded: no line from the child is ever buffered beyond
//! its limit, however long it really is.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use syncmgr_core::ProgressReply;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{Mutex, mpsc};
use tokio_util::bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

use crate::wire::{self, MAX_LINE};

/// One frame of the child's stdout.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A line, without its newline.
    Line(String),
    /// A line longer than [`MAX_LINE`]; its bytes were (or are being) discarded.
    TooLong,
    /// A line that is not UTF-8; it was dropped.
    NotUtf8,
}

/// [`LinesCodec`] limited to [`MAX_LINE`], with its errors turned into frames.
///
/// `FramedRead` ends its stream once after a decoder error and then waits for
/// new bytes before decoding again, so lines already buffered behind a bad one
/// would stall until the child writes more (and it may be waiting for our
/// answer). Bad lines are therefore frames, not errors.
#[derive(Debug)]
pub(crate) struct StdoutLines(LinesCodec);

impl StdoutLines {
    pub(crate) fn new() -> Self {
        StdoutLines(LinesCodec::new_with_max_length(MAX_LINE))
    }

    fn map(decoded: Result<Option<String>, LinesCodecError>) -> io::Result<Option<Frame>> {
        match decoded {
            Ok(line) => Ok(line.map(Frame::Line)),
            // The codec discards the rest of the line as it arrives.
            Err(LinesCodecError::MaxLineLengthExceeded) => Ok(Some(Frame::TooLong)),
            // The only I/O error the codec itself makes is bad UTF-8; the
            // line is consumed already.
            Err(LinesCodecError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                Ok(Some(Frame::NotUtf8))
            }
            Err(LinesCodecError::Io(e)) => Err(e),
        }
    }
}

impl Decoder for StdoutLines {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        Self::map(self.0.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        Self::map(self.0.decode_eof(buf))
    }
}

/// Longest stderr line kept; the rest of a longer line is dropped.
pub(crate) const STDERR_LINE_MAX: usize = 4096;

/// Lossy, truncating lines for stderr (which is not protocol and need not be
/// UTF-8).
#[derive(Debug, Default)]
pub(crate) struct StderrLines {
    /// Dropping the rest of a line that was cut.
    discarding: bool,
}

impl StderrLines {
    fn text(bytes: &[u8]) -> String {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        // Bytes that are not UTF-8 stay readable as `\xNN`.
        syncmgr_core::text::escape_bytes(bytes).into_owned()
    }
}

impl Decoder for StderrLines {
    type Item = String;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<String>> {
        loop {
            // Outside a cut line, look no further than the limit.
            let window = if self.discarding {
                buf.len()
            } else {
                buf.len().min(STDERR_LINE_MAX)
            };
            match buf[..window].iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let line = buf.split_to(end + 1);
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    return Ok(Some(Self::text(&line[..end])));
                }
                None if self.discarding => {
                    buf.clear();
                    return Ok(None);
                }
                None if buf.len() >= STDERR_LINE_MAX => {
                    let line = buf.split_to(STDERR_LINE_MAX);
                    self.discarding = true;
                    let mut text = Self::text(&line);
                    text.push('…');
                    return Ok(Some(text));
                }
                None => return Ok(None),
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<String>> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        if buf.is_empty() || self.discarding {
            buf.clear();
            return Ok(None);
        }
        let rest = Self::text(buf.chunk());
        buf.clear();
        Ok(Some(rest))
    }
}

/// Longest id echoed by [`Outgoing::Action`] without an allocation.
const INLINE_ID: usize = 38;

/// A request id kept inline, so answering `progress` allocates nothing.
#[derive(Clone, Copy)]
pub(crate) struct InlineId {
    len: u8,
    bytes: [u8; INLINE_ID],
}

impl InlineId {
    /// `None` when the raw id is too long to keep inline.
    pub(crate) fn new(raw: &str) -> Option<Self> {
        let src = raw.as_bytes();
        if src.len() > INLINE_ID {
            return None;
        }
        let mut bytes = [0; INLINE_ID];
        bytes[..src.len()].copy_from_slice(src);
        Some(InlineId {
            len: src.len() as u8,
            bytes,
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for InlineId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// What the writer task puts on the child's stdin.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A serialized line, newline included.
    Line(Vec<u8>),
    /// A `progress` response, written from static parts.
    Action { id: InlineId, action: ProgressReply },
    /// Flush and close stdin (the handler reads EOF).
    Close,
}

/// How many outgoing messages may wait for the writer. When the child stops
/// reading its stdin, senders wait here rather than grow memory; the engine's
/// timeouts then end the handler.
pub(crate) const OUTGOING_QUEUE: usize = 256;

/// The child's stdin, shared by the writer task and the urgent path; `None`
/// once closed or broken.
type Stdin = Arc<Mutex<Option<BufWriter<Box<dyn AsyncWrite + Send + Unpin>>>>>;

/// The sending side of the child's stdin. Cheap to clone.
///
/// Messages normally go through a bounded queue to the writer task, which
/// batches them. [`Outbox::send_urgent`] (the cancel path) and
/// [`Outbox::send_action`] (the reader's `progress` answers) write directly
/// instead, saving a task hop, but only when nothing is queued ahead of them,
/// so the order on the wire is always the order of sending. Bytes written
/// directly may wait in the buffer until the next flush: whoever writes next
/// flushes them too, and the reader flushes before it waits for input.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    /// Messages handed to the queue and not yet written by the writer.
    queued: Arc<AtomicUsize>,
    stdin: Stdin,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.queued)
            .field("closed", &self.tx.is_closed())
            .finish_non_exhaustive()
    }
}

/// Undoes a `queued` count whose message never made it into the queue (the
/// send failed, or its future was dropped while the queue was full).
struct Unqueue<'a>(Option<&'a AtomicUsize>);

impl Drop for Unqueue<'_> {
    fn drop(&mut self) {
        if let Some(queued) = self.0 {
            queued.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Outbox {
    /// Starts the writer task over `stdin`; returns the outbox feeding it and
    /// the task's handle.
    pub(crate) fn start<W>(stdin: W) -> (Outbox, tokio::task::JoinHandle<()>)
    where
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        let boxed: Box<dyn AsyncWrite + Send + Unpin> = Box::new(stdin);
        let stdin: Stdin = Arc::new(Mutex::new(Some(BufWriter::with_capacity(64 * 1024, boxed))));
        let queued = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(write_loop(Arc::clone(&stdin), Arc::clone(&queued), rx));
        (Outbox { tx, queued, stdin }, task)
    }

    /// Queues a message. `false` when the writer is gone (the handler is
    /// ending; the lifecycle task reports why).
    pub(crate) async fn send(&self, message: Outgoing) -> bool {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut unqueue = Unqueue(Some(&self.queued));
        let sent = self.tx.send(message).await.is_ok();
        if sent {
            unqueue.0 = None;
        }
        sent
    }

    /// Writes `line` and flushes it at once when the writer is idle with
    /// nothing queued; queues it otherwise.
    pub(crate) async fn send_urgent(&self, line: Vec<u8>) -> bool {
        if let Ok(mut stdin) = self.stdin.try_lock()
            && self.queued.load(Ordering::SeqCst) == 0
        {
            // Holding the lock with nothing queued: everything sent before
            // is on the wire or ahead of this line in the buffer.
            let Some(out) = stdin.as_mut() else {
                return false;
            };
            // A line shorter than the buffer is copied into it whole, so a
            // dropped future never leaves half a line behind.
            let written = match out.write_all(&line).await {
                Ok(()) => out.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                tracing::debug!(error = %e, "cannot write to the handler's stdin");
                *stdin = None;
                return false;
            }
            return true;
        }
        self.send(Outgoing::Line(line)).await
    }
}

impl Outbox {
    /// Writes `line` and flushes it right here, without awaiting, when the
    /// pipe is free, nothing is queued and the kernel takes it at once (the
    /// cancel path, called synchronously from the cancel); otherwise hands it
    /// to a task that sends it as [`Outbox::send_urgent`] would. Must run
    /// inside a tokio runtime.
    pub(crate) fn send_now(&self, line: Vec<u8>) {
        use futures::FutureExt as _;
        if let Ok(mut stdin) = self.stdin.try_lock()
            && self.queued.load(Ordering::SeqCst) == 0
        {
            let Some(out) = stdin.as_mut() else {
                return;
            };
            // A line shorter than the buffer is either copied into it whole
            // or not at all (the buffer must drain first), so polling once
            // never leaves half a line behind.
            match out.write_all(&line).now_or_never() {
                Some(Ok(())) => match out.flush().now_or_never() {
                    Some(Ok(())) => return,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "cannot write to the handler's stdin");
                        *stdin = None;
                        return;
                    }
                    None => {
                        // In the buffer; the pipe is full. Flush from a task.
                        drop(stdin);
                        let this = self.clone();
                        tokio::spawn(async move { this.flush().await });
                        return;
                    }
                },
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "cannot write to the handler's stdin");
                    *stdin = None;
                    return;
                }
                None => {}
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.send_urgent(line).await;
        });
    }

    /// Answers a `progress`: written into the stdin buffer at once, without a
    /// flush, when nothing is queued and the pipe is free (the hot path saves
    /// the hop to the writer task); queued otherwise. After
    /// [`Sent::Buffered`] the caller must call [`Outbox::flush`] before it
    /// waits for anything, or the answer may sit in the buffer.
    pub(crate) async fn send_action(&self, id: InlineId, action: ProgressReply) -> Sent {
        if let Ok(mut stdin) = self.stdin.try_lock()
            && self.queued.load(Ordering::SeqCst) == 0
        {
            let Some(out) = stdin.as_mut() else {
                return Sent::Closed;
            };
            // Short: copied into the buffer whole unless the buffer is full,
            // in which case it is written out first (batching a flood).
            if let Err(e) = write_action(out, &id, action).await {
                tracing::debug!(error = %e, "cannot write to the handler's stdin");
                *stdin = None;
                return Sent::Closed;
            }
            return Sent::Buffered;
        }
        if self.send(Outgoing::Action { id, action }).await {
            Sent::Queued
        } else {
            Sent::Closed
        }
    }

    /// Flushes what [`Outbox::send_action`] left in the buffer.
    pub(crate) async fn flush(&self) {
        let mut stdin = self.stdin.lock().await;
        if let Some(out) = stdin.as_mut()
            && let Err(e) = out.flush().await
        {
            tracing::debug!(error = %e, "cannot write to the handler's stdin");
            *stdin = None;
        }
    }
}

/// What became of a message given to [`Outbox::send_action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// In the stdin buffer, not flushed yet.
    Buffered,
    /// Queued for the writer task, which flushes it.
    Queued,
    /// The pipe is closed (the handler is ending).
    Closed,
}

/// Writes what the queue brings and flushes whenever it is momentarily empty,
/// so pipelined messages leave in one write.
async fn write_loop(stdin: Stdin, queued: Arc<AtomicUsize>, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(first) = rx.recv().await {
        let mut guard = stdin.lock().await;
        let Some(out) = guard.as_mut() else {
            return;
        };
        let mut next = Some(first);
        while let Some(message) = next {
            let written = match message {
                Outgoing::Line(line) => out.write_all(&line).await,
                Outgoing::Action { id, action } => write_action(out, &id, action).await,
                Outgoing::Close => {
                    let _ = out.flush().await;
                    // Dropping the pipe is what closes it.
                    *guard = None;
                    queued.fetch_sub(1, Ordering::SeqCst);
                    tracing::debug!("closed the handler's stdin");
                    return;
                }
            };
            queued.fetch_sub(1, Ordering::SeqCst);
            if let Err(e) = written {
                tracing::debug!(error = %e, "cannot write to the handler's stdin");
                *guard = None;
                return;
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush().await {
            tracing::debug!(error = %e, "cannot write to the handler's stdin");
            *guard = None;
            return;
        }
    }
}

async fn write_action<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    id: &InlineId,
    action: ProgressReply,
) -> io::Result<()> {
    out.write_all(wire::RESPONSE_HEAD.as_bytes()).await?;
    out.write_all(id.as_bytes()).await?;
    out.write_all(wire::progress_reply_tail(action).as_bytes())
        .await
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn frames(decoder: &mut StdoutLines, input: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            out.push(frame);
        }
        while let Some(frame) = decoder.decode_eof(&mut buf).unwrap() {
            out.push(frame);
        }
        out
    }

    #[test]
    fn stdout_bad_lines_are_frames_and_reading_goes_on() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.extend_from_slice(b"\nok\n\xff\xfe\nlast");
        let got = frames(&mut StdoutLines::new(), &input);
        assert_eq!(
            got,
            [
                Frame::TooLong,
                Frame::Line("ok".into()),
                Frame::NotUtf8,
                Frame::Line("last".into())
            ]
        );
    }

    #[test]
    fn stderr_lines_are_truncated_and_escaped() {
        let mut d = StderrLines::default();
        let mut input = vec![b'e'; STDERR_LINE_MAX + 100];
        input.extend_from_slice(b"\nbad \xff\r\ntail");
        let mut buf = BytesMut::from(&input[..]);
        let first = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(first.len(), STDERR_LINE_MAX + '…'.len_utf8());
        assert_eq!(d.decode(&mut buf).unwrap().unwrap(), "bad \\xff");
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(d.decode_eof(&mut buf).unwrap().unwrap(), "tail");
        assert_eq!(d.decode_eof(&mut buf).unwrap(), None);
    }

    #[tokio::test]
    async fn writer_keeps_order_and_answers_progress_from_static_parts() {
        use tokio::io::AsyncReadExt;

        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let (outbox, writer) = Outbox::start(ours);
        let id = serde_json::value::RawValue::from_string("\"h-7\"".into()).unwrap();
        assert!(
            outbox
                .send(Outgoing::Action {
                    id: InlineId::new(id.get()).unwrap(),
                    action: ProgressReply::CancelItem,
                })
                .await
        );
        assert!(outbox.send_urgent(b"urgent\n".to_vec()).await);
        assert!(outbox.send(Outgoing::Close).await);
        writer.await.unwrap();
        // Closed: nothing more goes out, and nothing hangs.
        assert!(!outbox.send_urgent(b"late\n".to_vec()).await);
        let mut got = String::new();
        theirs.read_to_string(&mut got).await.unwrap();
        let expected = wire::encode_response(
            &id,
            &wire::ProgressResult {
                action: ProgressReply::CancelItem,
            },
        )
        .unwrap();
        assert_eq!(got, format!("{expected}urgent\n"));
        assert_eq!(outbox.queued.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn buffered_answers_keep_their_place_and_go_out_on_flush() {
        use tokio::io::AsyncReadExt;

        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let (outbox, writer) = Outbox::start(ours);
        let id = |n: u32| InlineId::new(&n.to_string()).unwrap();
        let answer = |n: u32, action| {
            let raw = serde_json::value::RawValue::from_string(n.to_string()).unwrap();
            wire::encode_response(&raw, &wire::ProgressResult { action }).unwrap()
        };
        // Idle pipe: written into the buffer, not yet on the wire.
        assert_eq!(
            outbox.send_action(id(1), ProgressReply::Continue).await,
            Sent::Buffered
        );
        let mut probe = [0u8; 1];
        assert!(
            futures::FutureExt::now_or_never(theirs.read(&mut probe)).is_none(),
            "a buffered answer waits for the flush"
        );
        outbox.flush().await;
        let first = answer(1, ProgressReply::Continue);
        let mut got = vec![0u8; first.len()];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), first);

        // Buffered, then queued, then buffered again: the wire keeps the
        // order of sending (the writer's flush takes the buffered bytes too).
        assert_eq!(
            outbox.send_action(id(2), ProgressReply::CancelItem).await,
            Sent::Buffered
        );
        assert!(outbox.send(Outgoing::Line(b"queued\n".to_vec())).await);
        let third = outbox.send_action(id(3), ProgressReply::CancelAll).await;
        assert_ne!(third, Sent::Closed);
        outbox.flush().await;
        assert!(outbox.send(Outgoing::Close).await);
        writer.await.unwrap();
        assert_eq!(
            outbox.send_action(id(4), ProgressReply::Continue).await,
            Sent::Closed
        );
        let mut rest = String::new();
        theirs.read_to_string(&mut rest).await.unwrap();
        assert_eq!(
            rest,
            format!(
                "{}queued\n{}",
                answer(2, ProgressReply::CancelItem),
                answer(3, ProgressReply::CancelAll)
            )
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_bytes_split_anywhere_decode_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            cut in 0usize..512,
        ) {
            let cut = cut.min(bytes.len());
            let mut out = StdoutLines::new();
            let mut err = StderrLines::default();
            let mut a = BytesMut::new();
            let mut b = BytesMut::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                a.extend_from_slice(part);
                b.extend_from_slice(part);
                while let Some(frame) = out.decode(&mut a).unwrap() {
                    if let Frame::Line(line) = frame {
                        let _ = crate::wire::decode_line(&line);
                    }
                }
                while err.decode(&mut b).unwrap().is_some() {}
            }
            while out.decode_eof(&mut a).unwrap().is_some() {}
            while err.decode_eof(&mut b).unwrap().is_some() {}
        }
    }
}
