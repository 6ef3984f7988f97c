//! The worker protocol: what a host and its worker processes say to each other.
//!
//! # Frames
//!
//! A frame is a little-endian `u32` length `n` followed by `n` bytes that are one snapshot
//! ([`crate::snapshot`]) of kind `hostloop.wire`, schema version 1. So every frame is
//! checksummed, and decoding it is the snapshot reader's: bounded by the frame's own size, an
//! error (never a panic) for anything damaged. A length above [`MAX_FRAME`] is refused before
//! anything is allocated for it. Whatever a worker sends, the host's worst outcome is "this
//! worker is broken": it is killed and reported, the host goes on.
//!
//! The payload of each frame starts with a `u8` tag naming the message ([`Msg`]), then its
//! fields in order. Large byte fields (a saved state, a task's input or result: [`WireBytes`])
//! and large sink payloads ([`WirePayload::Shared`]) are not in the frame: they travel in
//! sealed memfds passed beside it with `SCM_RIGHTS`, one fd per frame, taken in order.
//!
//! # Conversation
//!
//! - The worker says [`Msg::Hello`] first.
//! - Requests from the host carry a request id; the worker answers each with exactly one of
//!   [`Msg::Loaded`], [`Msg::Done`] or [`Msg::Failed`] carrying the same id, in order.
//! - Sink messages of the worker's plugins arrive as [`Msg::Emit`]s, one pump's worth followed
//!   by [`Msg::Flushed`]. The worker pumps again only once the host answered [`Msg::Ack`] for
//!   that pump: the host's pace sets the worker's, as the host's pump sets an in-process
//!   plugin's (a `latest` simulation's frames coalesce in the worker, not in a queue).
//! - [`Msg::Ping`]/[`Msg::Pong`] is the heartbeat: a worker that stops answering is killed.
//! - EOF on the socket tells the worker its host is gone: it exits.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::blob::Blob;
use crate::event::Event;
use crate::snapshot::{SnapshotError, SnapshotReader, SnapshotWriter};

/// The snapshot kind of a frame's body.
pub(crate) const KIND: &str = "hostloop.wire";
/// The schema version of a frame's body: both sides of a socket speak exactly one, so a worker
/// program of another hostloop build is refused at its first frame, with that reason.
pub(crate) const VERSION: u32 = 3;
/// The largest frame body either side accepts (big payloads travel in shared memory instead).
pub(crate) const MAX_FRAME: usize = 64 << 20;

/// Bytes of a request or an answer (a saved state, a task's input or result) as they cross:
/// inline in the frame, or — from [`shm::INLINE_MAX`](super::shm::INLINE_MAX) up — in a
/// sealed memfd passed beside the frame, which the receiver maps and reads in place. So a
/// checkpoint of a million-particle simulation never goes through the socket (nor is it
/// copied out of it and checksummed on the host's side), and no state is too large to cross:
/// frames stay under [`MAX_FRAME`], sealed bytes up to [`MAX_SEALED`].
#[derive(Debug, Clone)]
pub(crate) enum WireBytes {
    Inline(Vec<u8>),
    Sealed(Blob),
}

/// The largest sealed bytes a receiver maps.
pub(crate) const MAX_SEALED: u64 = super::shm::MAX_REGION;

impl WireBytes {
    /// `bytes`, sealed in a memfd when they are large (inline if a memfd cannot be made).
    pub(crate) fn new(bytes: Vec<u8>) -> WireBytes {
        if bytes.len() < super::shm::INLINE_MAX {
            return WireBytes::Inline(bytes);
        }
        match Blob::sealed("hostloop-wire", &bytes) {
            Ok(b) => WireBytes::Sealed(b),
            Err(_) => WireBytes::Inline(bytes),
        }
    }

    /// As [`new`](WireBytes::new), from a borrowed slice (one copy either way).
    pub(crate) fn copy_of(bytes: &[u8]) -> WireBytes {
        if bytes.len() < super::shm::INLINE_MAX {
            return WireBytes::Inline(bytes.to_vec());
        }
        match Blob::sealed("hostloop-wire", bytes) {
            Ok(b) => WireBytes::Sealed(b),
            Err(_) => WireBytes::Inline(bytes.to_vec()),
        }
    }

    /// The bytes as a vector of their own (a copy only if they were sealed).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            WireBytes::Inline(v) => v,
            WireBytes::Sealed(b) => b.to_vec(),
        }
    }
}

impl Default for WireBytes {
    fn default() -> Self {
        WireBytes::Inline(Vec::new())
    }
}

impl std::ops::Deref for WireBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            WireBytes::Inline(v) => v,
            WireBytes::Sealed(b) => b,
        }
    }
}

impl PartialEq for WireBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl From<Vec<u8>> for WireBytes {
    fn from(v: Vec<u8>) -> Self {
        WireBytes::Inline(v)
    }
}

const B_INLINE: u8 = 0;
const B_SEALED: u8 = 1;

fn put_bytes(w: &mut SnapshotWriter, b: &WireBytes) {
    match b {
        WireBytes::Inline(v) => {
            w.reserve(v.len() + 16);
            w.u8(B_INLINE).bytes(v);
        }
        WireBytes::Sealed(blob) => {
            w.u8(B_SEALED).u64(blob.len() as u64);
        }
    }
}

fn get_bytes(
    r: &mut SnapshotReader<'_>,
    fds: &mut dyn FnMut() -> Option<OwnedFd>,
) -> Result<WireBytes, WireError> {
    match r.u8()? {
        B_INLINE => Ok(WireBytes::Inline(r.bytes()?.to_vec())),
        B_SEALED => {
            let len = r.u64()?;
            if len > MAX_SEALED {
                return Err(WireError::Sealed(format!(
                    "sealed bytes of {len} bytes (at most {MAX_SEALED} are accepted)"
                )));
            }
            let fd =
                fds().ok_or_else(|| WireError::Sealed("sealed bytes without their fd".into()))?;
            Blob::from_fd("hostloop-wire", fd, len)
                .map(WireBytes::Sealed)
                .map_err(|e| WireError::Sealed(format!("sealed bytes that do not map: {e}")))
        }
        other => Err(WireError::Unknown("bytes", other)),
    }
}

/// A sink message's payload as it crosses: a typed array keeps its layout, bytes and all, so
/// the host's sink sees what it would have seen in-process.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WirePayload {
    Bytes(Vec<u8>),
    Array {
        elem: u32,
        components: u64,
        count: u64,
        stride: u64,
        bytes: Vec<u8>,
    },
    /// The first `len` bytes of shared-memory region `region` ([`super::shm`]); `elem` 0 for
    /// bytes, else an array's element type with its layout.
    Shared {
        elem: u32,
        components: u64,
        count: u64,
        stride: u64,
        region: u32,
        len: u64,
    },
}

/// One message. Host to worker: `Load`, `Unload`, `Reload`, `Save`, `Restore`, `Event`, `Ack`,
/// `Ping`, `Quit`. Worker to host: `Hello`, `Loaded`, `Done`, `Failed`, `Emit`, `Flushed`, `Pong`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Msg {
    /// Load the plugin at `path` into slot `slot`.
    Load {
        req: u64,
        slot: u32,
        path: String,
    },
    /// Unload slot `slot` within `deadline_ms`.
    Unload {
        req: u64,
        slot: u32,
        deadline_ms: u64,
    },
    /// Hot-reload slot `slot` from `path` within `deadline_ms`.
    Reload {
        req: u64,
        slot: u32,
        path: String,
        deadline_ms: u64,
    },
    /// Save slot `slot`'s state (answered by `Done` with the bytes, empty for none; sealed when
    /// large).
    Save {
        req: u64,
        slot: u32,
    },
    /// Restore slot `slot` from `state`.
    Restore {
        req: u64,
        slot: u32,
        state: WireBytes,
    },
    /// A host event, for every plugin in the worker.
    Event(Event),
    /// The host delivered the pump `seq`: the worker may pump again.
    Ack {
        seq: u64,
    },
    Ping {
        seq: u64,
    },
    /// Unload everything and exit.
    Quit,

    Hello {
        pid: u32,
    },
    Loaded {
        req: u64,
        name: String,
        version: String,
        flags: u32,
    },
    Done {
        req: u64,
        bytes: WireBytes,
    },
    /// `status` is the `HL_STATUS_*` of the failure's [`PluginErrorKind`](crate::plugin::PluginErrorKind).
    Failed {
        req: u64,
        status: u32,
        reason: String,
    },
    Emit {
        topic: String,
        payload: WirePayload,
    },
    /// A shared-memory region of `size` bytes, its fd attached (`SCM_RIGHTS`).
    Region {
        id: u32,
        size: u64,
    },
    /// Region `id` will not be used again.
    Unmap {
        id: u32,
    },
    /// Host to worker: the host's blob `name`, of `size` bytes, its fd attached.
    Blob {
        name: String,
        size: u64,
    },
    /// Host to worker: run task `name` of slot `slot`'s plugin on `input` (answered by `Done`
    /// with the result or `Failed`, and `TaskProgress` meanwhile).
    RunTask {
        req: u64,
        slot: u32,
        name: String,
        input: WireBytes,
    },
    /// Host to worker: cancel the running task `req`.
    CancelTask {
        req: u64,
    },
    /// Worker to host: the running task `req` reported progress.
    TaskProgress {
        req: u64,
        fraction: f32,
    },
    /// The end of one pump's messages.
    Flushed {
        seq: u64,
    },
    Pong {
        seq: u64,
    },
}

const T_LOAD: u8 = 1;
const T_UNLOAD: u8 = 2;
const T_RELOAD: u8 = 3;
const T_SAVE: u8 = 4;
const T_RESTORE: u8 = 5;
const T_EVENT: u8 = 6;
const T_ACK: u8 = 7;
const T_PING: u8 = 8;
const T_QUIT: u8 = 9;
const T_BLOB: u8 = 10;
const T_RUN_TASK: u8 = 11;
const T_CANCEL_TASK: u8 = 12;
const T_TASK_PROGRESS: u8 = 41;
const T_HELLO: u8 = 32;
const T_LOADED: u8 = 33;
const T_DONE: u8 = 34;
const T_FAILED: u8 = 35;
const T_EMIT: u8 = 36;
const T_FLUSHED: u8 = 37;
const T_PONG: u8 = 38;
const T_REGION: u8 = 39;
const T_UNMAP: u8 = 40;

const P_BYTES: u8 = 1;
const P_ARRAY: u8 = 2;
const P_SHARED: u8 = 3;

impl Msg {
    /// The message's name, for errors (never its contents, which may be large).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Msg::Load { .. } => "load",
            Msg::Unload { .. } => "unload",
            Msg::Reload { .. } => "reload",
            Msg::Save { .. } => "save",
            Msg::Restore { .. } => "restore",
            Msg::Event(_) => "event",
            Msg::Ack { .. } => "ack",
            Msg::Ping { .. } => "ping",
            Msg::Quit => "quit",
            Msg::Blob { .. } => "blob",
            Msg::RunTask { .. } => "run task",
            Msg::CancelTask { .. } => "cancel task",
            Msg::TaskProgress { .. } => "task progress",
            Msg::Hello { .. } => "hello",
            Msg::Loaded { .. } => "loaded",
            Msg::Done { .. } => "done",
            Msg::Failed { .. } => "failed",
            Msg::Emit { .. } => "emit",
            Msg::Region { .. } => "region",
            Msg::Unmap { .. } => "unmap",
            Msg::Flushed { .. } => "flushed",
            Msg::Pong { .. } => "pong",
        }
    }

    /// The frame for this message: length prefix and body.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = SnapshotWriter::new(KIND, VERSION);
        match self {
            Msg::Load { req, slot, path } => {
                w.u8(T_LOAD).u64(*req).u32(*slot).str(path);
            }
            Msg::Unload {
                req,
                slot,
                deadline_ms,
            } => {
                w.u8(T_UNLOAD).u64(*req).u32(*slot).u64(*deadline_ms);
            }
            Msg::Reload {
                req,
                slot,
                path,
                deadline_ms,
            } => {
                w.u8(T_RELOAD)
                    .u64(*req)
                    .u32(*slot)
                    .str(path)
                    .u64(*deadline_ms);
            }
            Msg::Save { req, slot } => {
                w.u8(T_SAVE).u64(*req).u32(*slot);
            }
            Msg::Restore { req, slot, state } => {
                w.u8(T_RESTORE).u64(*req).u32(*slot);
                put_bytes(&mut w, state);
            }
            Msg::Event(e) => {
                w.u8(T_EVENT);
                encode_event(&mut w, e);
            }
            Msg::Ack { seq } => {
                w.u8(T_ACK).u64(*seq);
            }
            Msg::Ping { seq } => {
                w.u8(T_PING).u64(*seq);
            }
            Msg::Quit => {
                w.u8(T_QUIT);
            }
            Msg::Blob { name, size } => {
                w.u8(T_BLOB).str(name).u64(*size);
            }
            Msg::RunTask {
                req,
                slot,
                name,
                input,
            } => {
                w.u8(T_RUN_TASK).u64(*req).u32(*slot).str(name);
                put_bytes(&mut w, input);
            }
            Msg::CancelTask { req } => {
                w.u8(T_CANCEL_TASK).u64(*req);
            }
            Msg::TaskProgress { req, fraction } => {
                w.u8(T_TASK_PROGRESS).u64(*req).f32(*fraction);
            }
            Msg::Hello { pid } => {
                w.u8(T_HELLO).u32(*pid);
            }
            Msg::Loaded {
                req,
                name,
                version,
                flags,
            } => {
                w.u8(T_LOADED).u64(*req).str(name).str(version).u32(*flags);
            }
            Msg::Done { req, bytes } => {
                w.u8(T_DONE).u64(*req);
                put_bytes(&mut w, bytes);
            }
            Msg::Failed {
                req,
                status,
                reason,
            } => {
                w.u8(T_FAILED).u64(*req).u32(*status).str(reason);
            }
            Msg::Emit { topic, payload } => {
                w.u8(T_EMIT).str(topic);
                match payload {
                    WirePayload::Bytes(b) => {
                        w.u8(P_BYTES).bytes(b);
                    }
                    WirePayload::Array {
                        elem,
                        components,
                        count,
                        stride,
                        bytes,
                    } => {
                        w.reserve(bytes.len() + 40);
                        w.u8(P_ARRAY)
                            .u32(*elem)
                            .u64(*components)
                            .u64(*count)
                            .u64(*stride)
                            .bytes(bytes);
                    }
                    WirePayload::Shared {
                        elem,
                        components,
                        count,
                        stride,
                        region,
                        len,
                    } => {
                        w.u8(P_SHARED)
                            .u32(*elem)
                            .u64(*components)
                            .u64(*count)
                            .u64(*stride)
                            .u32(*region)
                            .u64(*len);
                    }
                }
            }
            Msg::Region { id, size } => {
                w.u8(T_REGION).u32(*id).u64(*size);
            }
            Msg::Unmap { id } => {
                w.u8(T_UNMAP).u32(*id);
            }
            Msg::Flushed { seq } => {
                w.u8(T_FLUSHED).u64(*seq);
            }
            Msg::Pong { seq } => {
                w.u8(T_PONG).u64(*seq);
            }
        }
        let body = w.finish();
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        frame
    }

    /// The memfd of the sealed bytes this message carries, if any: passed beside its frame.
    fn sealed(&self) -> Option<&Blob> {
        match self {
            Msg::Restore {
                state: WireBytes::Sealed(b),
                ..
            }
            | Msg::Done {
                bytes: WireBytes::Sealed(b),
                ..
            }
            | Msg::RunTask {
                input: WireBytes::Sealed(b),
                ..
            } => Some(b),
            _ => None,
        }
    }

    /// Decodes one frame body (without its length prefix); `fds` gives the fds received beside
    /// it, in order, for sealed bytes.
    pub(crate) fn decode(
        body: &[u8],
        fds: &mut dyn FnMut() -> Option<OwnedFd>,
    ) -> Result<Msg, WireError> {
        let mut r = SnapshotReader::open(body, KIND, VERSION..=VERSION)?;
        let msg = match r.u8()? {
            T_LOAD => Msg::Load {
                req: r.u64()?,
                slot: r.u32()?,
                path: r.str()?.to_owned(),
            },
            T_UNLOAD => Msg::Unload {
                req: r.u64()?,
                slot: r.u32()?,
                deadline_ms: r.u64()?,
            },
            T_RELOAD => Msg::Reload {
                req: r.u64()?,
                slot: r.u32()?,
                path: r.str()?.to_owned(),
                deadline_ms: r.u64()?,
            },
            T_SAVE => Msg::Save {
                req: r.u64()?,
                slot: r.u32()?,
            },
            T_RESTORE => Msg::Restore {
                req: r.u64()?,
                slot: r.u32()?,
                state: get_bytes(&mut r, fds)?,
            },
            T_EVENT => Msg::Event(decode_event(&mut r)?),
            T_ACK => Msg::Ack { seq: r.u64()? },
            T_PING => Msg::Ping { seq: r.u64()? },
            T_QUIT => Msg::Quit,
            T_BLOB => Msg::Blob {
                name: r.str()?.to_owned(),
                size: r.u64()?,
            },
            T_RUN_TASK => Msg::RunTask {
                req: r.u64()?,
                slot: r.u32()?,
                name: r.str()?.to_owned(),
                input: get_bytes(&mut r, fds)?,
            },
            T_CANCEL_TASK => Msg::CancelTask { req: r.u64()? },
            T_TASK_PROGRESS => Msg::TaskProgress {
                req: r.u64()?,
                fraction: r.f32()?,
            },
            T_HELLO => Msg::Hello { pid: r.u32()? },
            T_LOADED => Msg::Loaded {
                req: r.u64()?,
                name: r.str()?.to_owned(),
                version: r.str()?.to_owned(),
                flags: r.u32()?,
            },
            T_DONE => Msg::Done {
                req: r.u64()?,
                bytes: get_bytes(&mut r, fds)?,
            },
            T_FAILED => Msg::Failed {
                req: r.u64()?,
                status: r.u32()?,
                reason: r.str()?.to_owned(),
            },
            T_EMIT => {
                let topic = r.str()?.to_owned();
                let payload = match r.u8()? {
                    P_BYTES => WirePayload::Bytes(r.bytes()?.to_vec()),
                    P_ARRAY => WirePayload::Array {
                        elem: r.u32()?,
                        components: r.u64()?,
                        count: r.u64()?,
                        stride: r.u64()?,
                        bytes: r.bytes()?.to_vec(),
                    },
                    P_SHARED => WirePayload::Shared {
                        elem: r.u32()?,
                        components: r.u64()?,
                        count: r.u64()?,
                        stride: r.u64()?,
                        region: r.u32()?,
                        len: r.u64()?,
                    },
                    other => return Err(WireError::Unknown("payload", other)),
                };
                Msg::Emit { topic, payload }
            }
            T_REGION => Msg::Region {
                id: r.u32()?,
                size: r.u64()?,
            },
            T_UNMAP => Msg::Unmap { id: r.u32()? },
            T_FLUSHED => Msg::Flushed { seq: r.u64()? },
            T_PONG => Msg::Pong { seq: r.u64()? },
            other => return Err(WireError::Unknown("message", other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

const E_FRAME: u8 = 1;
const E_SELECTION: u8 = 2;
const E_OPENED: u8 = 3;
const E_SAVED: u8 = 4;
const E_PLAY: u8 = 5;
const E_STOP: u8 = 6;
const E_SHUTDOWN: u8 = 7;
const E_CUSTOM: u8 = 8;

fn encode_event(w: &mut SnapshotWriter, e: &Event) {
    match e {
        Event::FrameChanged { frame } => {
            w.u8(E_FRAME).f64(*frame);
        }
        Event::SelectionChanged => {
            w.u8(E_SELECTION);
        }
        Event::SceneOpened { path } => {
            w.u8(E_OPENED).str(path);
        }
        Event::SceneSaved { path } => {
            w.u8(E_SAVED).str(path);
        }
        Event::PlaybackStarted => {
            w.u8(E_PLAY);
        }
        Event::PlaybackStopped => {
            w.u8(E_STOP);
        }
        Event::ShutdownRequested => {
            w.u8(E_SHUTDOWN);
        }
        Event::Custom {
            topic,
            bytes,
            coalesce,
        } => {
            w.u8(E_CUSTOM).str(topic).bytes(bytes).bool(*coalesce);
        }
    }
}

fn decode_event(r: &mut SnapshotReader<'_>) -> Result<Event, WireError> {
    Ok(match r.u8()? {
        E_FRAME => Event::FrameChanged { frame: r.f64()? },
        E_SELECTION => Event::SelectionChanged,
        E_OPENED => Event::SceneOpened {
            path: r.str()?.to_owned(),
        },
        E_SAVED => Event::SceneSaved {
            path: r.str()?.to_owned(),
        },
        E_PLAY => Event::PlaybackStarted,
        E_STOP => Event::PlaybackStopped,
        E_SHUTDOWN => Event::ShutdownRequested,
        E_CUSTOM => Event::Custom {
            topic: r.str()?.to_owned(),
            bytes: r.bytes()?.to_vec(),
            coalesce: r.bool()?,
        },
        other => return Err(WireError::Unknown("event", other)),
    })
}

/// Why bytes from the other side are not a message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WireError {
    /// The frame's body is not an intact `hostloop.wire` snapshot, or its fields do not read.
    Snapshot(SnapshotError),
    /// A tag this build does not know.
    Unknown(&'static str, u8),
    /// A length prefix above [`MAX_FRAME`].
    Oversized(usize),
    /// Sealed bytes that are missing their fd, too large, or not a sealed memfd of their size.
    Sealed(String),
}

impl From<SnapshotError> for WireError {
    fn from(e: SnapshotError) -> Self {
        WireError::Snapshot(e)
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Snapshot(SnapshotError::UnsupportedVersion { found, .. }) => write!(
                f,
                "frames of protocol version {found}, not {VERSION}: the worker program is \
                 from another hostloop build"
            ),
            WireError::Snapshot(e) => write!(f, "a damaged frame: {e}"),
            WireError::Unknown(what, tag) => write!(f, "an unknown {what} tag {tag}"),
            WireError::Oversized(n) => {
                write!(f, "a frame of {n} bytes (at most {MAX_FRAME} are accepted)")
            }
            WireError::Sealed(why) => f.write_str(why),
        }
    }
}

/// Bytes (and fds) read from a socket, cut into frames.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    at: usize,
    /// Fds received with `SCM_RIGHTS`, in order; each `region` or `blob` frame, and each frame
    /// with sealed bytes, takes the next one.
    pub(crate) fds: VecDeque<OwnedFd>,
}

impl Inbox {
    /// Reads what the (non-blocking) socket has, up to about two frames' worth at a time, with
    /// the fds sent beside it. `Ok(false)` at EOF. Reading never raises a signal.
    ///
    /// # Errors
    ///
    /// A socket error, or more fds at once than the protocol sends (the kernel would have
    /// closed the rest).
    pub(crate) fn fill(&mut self, sock: &UnixStream) -> io::Result<bool> {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        const CHUNK: usize = 256 << 10;
        while self.buf.len() < 2 * MAX_FRAME {
            let len = self.buf.len();
            self.buf.resize(len + CHUNK, 0);
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let got = rustix::net::recvmsg(
                sock,
                &mut [io::IoSliceMut::new(&mut self.buf[len..])],
                &mut control,
                RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
            );
            let n = got.as_ref().map_or(0, |m| m.bytes);
            self.buf.truncate(len + n);
            for msg in control.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = msg {
                    self.fds.extend(fds);
                }
            }
            match got {
                Ok(m) if m.flags.contains(ReturnFlags::CTRUNC) => {
                    return Err(io::Error::other("more fds in one message than allowed"))
                }
                Ok(m) if m.bytes == 0 => return Ok(false),
                Ok(_) => {}
                Err(rustix::io::Errno::AGAIN) => return Ok(true),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Whether `fill` stopped before the socket was drained (call it again after `next`).
    pub(crate) fn is_full(&self) -> bool {
        self.buf.len() - self.at >= 2 * MAX_FRAME
    }

    /// The next whole frame's message, if one has arrived.
    pub(crate) fn next(&mut self) -> Result<Option<Msg>, WireError> {
        let rest = &self.buf[self.at..];
        let Some(head) = rest.first_chunk::<4>() else {
            return Ok(None);
        };
        let n = u32::from_le_bytes(*head) as usize;
        if n > MAX_FRAME {
            return Err(WireError::Oversized(n));
        }
        let Some(body) = rest.get(4..4 + n) else {
            return Ok(None);
        };
        let fds = &mut self.fds;
        let msg = Msg::decode(body, &mut || fds.pop_front());
        self.at += 4 + n;
        msg.map(Some)
    }
}

/// Frames (and the fds some carry) waiting to be written to a socket.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    frames: VecDeque<(Vec<u8>, Option<Attached>)>,
    /// Bytes of the first frame already sent.
    sent: usize,
    queued: usize,
}

/// The fd sent with a frame: one handed over, or a sealed blob's (kept open until it is sent).
#[derive(Debug)]
enum Attached {
    Fd(OwnedFd),
    Sealed(Blob),
}

impl Attached {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Attached::Fd(fd) => fd.as_fd(),
            Attached::Sealed(b) => b.fd(),
        }
    }
}

impl Outbox {
    /// Queues `msg`, with the memfd of its sealed bytes if it has them.
    pub(crate) fn push(&mut self, msg: &Msg) {
        let sealed = msg.sealed().cloned().map(Attached::Sealed);
        self.push_frame(msg.encode(), sealed);
    }

    /// Queues `msg` with `fd` attached to its first byte (`SCM_RIGHTS`).
    pub(crate) fn push_with_fd(&mut self, msg: &Msg, fd: OwnedFd) {
        debug_assert!(msg.sealed().is_none(), "one fd per frame");
        self.push_frame(msg.encode(), Some(Attached::Fd(fd)));
    }

    fn push_frame(&mut self, frame: Vec<u8>, fd: Option<Attached>) {
        self.queued += frame.len();
        self.frames.push_back((frame, fd));
    }

    /// Bytes not written yet.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Writes what the socket takes without blocking, with `MSG_NOSIGNAL`: a dead peer is an
    /// `EPIPE` error here, never a `SIGPIPE` for the process (hosts may run with SIGPIPE at its
    /// default, fatal disposition). `Ok(true)` when everything was written.
    pub(crate) fn flush(&mut self, fd: impl AsFd) -> io::Result<bool> {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
        while let Some((frame, attached)) = self.frames.front_mut() {
            let sent = match attached.take() {
                Some(passed) => {
                    let mut space =
                        [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                    let mut control = SendAncillaryBuffer::new(&mut space);
                    let fds = [passed.as_fd()];
                    control.push(SendAncillaryMessage::ScmRights(&fds));
                    let r = rustix::net::sendmsg(
                        &fd,
                        &[io::IoSlice::new(&frame[self.sent..])],
                        &mut control,
                        flags,
                    );
                    if r.is_err() {
                        *attached = Some(passed); // not sent: try again with the fd
                    }
                    r
                }
                None => rustix::net::send(&fd, &frame[self.sent..], flags),
            };
            match sent {
                Ok(n) => {
                    self.sent += n;
                    self.queued -= n;
                    if self.sent == frame.len() {
                        self.frames.pop_front();
                        self.sent = 0;
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return Ok(false),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
#[path = "wire_fuzz.rs"]
mod wire_fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn all() -> Vec<Msg> {
        vec![
            Msg::Load {
                req: 1,
                slot: 2,
                path: "/p/lib.so".into(),
            },
            Msg::Unload {
                req: 3,
                slot: 2,
                deadline_ms: 500,
            },
            Msg::Reload {
                req: 4,
                slot: 2,
                path: "x".into(),
                deadline_ms: 9,
            },
            Msg::Save { req: 5, slot: 0 },
            Msg::Restore {
                req: 6,
                slot: 0,
                state: vec![1, 2, 3].into(),
            },
            Msg::Event(Event::FrameChanged { frame: 12.5 }),
            Msg::Event(Event::Custom {
                topic: "a/b".into(),
                bytes: vec![0; 7],
                coalesce: true,
            }),
            Msg::Event(Event::SceneSaved { path: "s".into() }),
            Msg::Ack { seq: 7 },
            Msg::Ping { seq: 8 },
            Msg::Quit,
            Msg::Blob {
                name: "mesh".into(),
                size: 1 << 28,
            },
            Msg::RunTask {
                req: 4,
                slot: 1,
                name: "sum".into(),
                input: vec![1, 2, 3].into(),
            },
            Msg::CancelTask { req: 4 },
            Msg::TaskProgress {
                req: 4,
                fraction: 0.5,
            },
            Msg::Hello { pid: 42 },
            Msg::Loaded {
                req: 1,
                name: "n".into(),
                version: "1".into(),
                flags: 1,
            },
            Msg::Done {
                req: 5,
                bytes: vec![9; 100].into(),
            },
            Msg::Failed {
                req: 1,
                status: 16,
                reason: "no file".into(),
            },
            Msg::Emit {
                topic: "t".into(),
                payload: WirePayload::Bytes(vec![1]),
            },
            Msg::Emit {
                topic: "p".into(),
                payload: WirePayload::Array {
                    elem: 6,
                    components: 3,
                    count: 2,
                    stride: 12,
                    bytes: vec![0; 24],
                },
            },
            Msg::Emit {
                topic: "big".into(),
                payload: WirePayload::Shared {
                    elem: 6,
                    components: 3,
                    count: 1_000_000,
                    stride: 12,
                    region: 2,
                    len: 12_000_000,
                },
            },
            Msg::Region {
                id: 2,
                size: 1 << 24,
            },
            Msg::Unmap { id: 2 },
            Msg::Flushed { seq: 3 },
            Msg::Pong { seq: 8 },
        ]
    }

    #[test]
    fn every_message_survives_the_round_trip_through_an_inbox() {
        let mut inbox = Inbox::default();
        for m in all() {
            inbox.buf.extend_from_slice(&m.encode());
        }
        for m in all() {
            assert_eq!(inbox.next().unwrap(), Some(m));
        }
        assert_eq!(inbox.next().unwrap(), None);
    }

    #[test]
    fn frames_and_their_fds_cross_a_socketpair_and_a_dead_peer_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut out = Outbox::default();
        out.push(&Msg::Ping { seq: 1 });
        let file = std::fs::File::open("/dev/null").unwrap();
        out.push_with_fd(&Msg::Region { id: 9, size: 1 }, OwnedFd::from(file));
        out.push(&Msg::Pong { seq: 2 });
        assert!(out.flush(&a).unwrap());
        assert!(out.is_empty() && out.queued() == 0);
        let mut inbox = Inbox::default();
        assert!(inbox.fill(&b).unwrap());
        assert_eq!(inbox.next().unwrap(), Some(Msg::Ping { seq: 1 }));
        assert_eq!(inbox.next().unwrap(), Some(Msg::Region { id: 9, size: 1 }));
        assert_eq!(inbox.fds.len(), 1, "the fd came with its frame");
        assert_eq!(inbox.next().unwrap(), Some(Msg::Pong { seq: 2 }));
        // The peer goes away: reading says EOF, writing is EPIPE (no SIGPIPE: MSG_NOSIGNAL).
        drop(a);
        assert!(!inbox.fill(&b).unwrap());
        let (c, d) = UnixStream::pair().unwrap();
        drop(d);
        out.push(&Msg::Ping { seq: 3 });
        let err = out.flush(&c).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::PIPE.raw_os_error())
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_bytes_cross_sealed_beside_their_frame_and_a_missing_or_unsealed_fd_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let big: Vec<u8> = (0..super::super::shm::INLINE_MAX * 3)
            .map(|i| (i % 253) as u8)
            .collect();
        let state = WireBytes::new(big.clone());
        assert!(
            matches!(state, WireBytes::Sealed(_)),
            "large bytes are sealed"
        );
        assert!(matches!(WireBytes::new(vec![1; 10]), WireBytes::Inline(_)));
        let mut out = Outbox::default();
        let msg = Msg::Restore {
            req: 1,
            slot: 2,
            state,
        };
        out.push(&msg);
        out.push(&Msg::Done {
            req: 3,
            bytes: WireBytes::copy_of(&big[1..]),
        });
        assert!(
            out.queued() < 200,
            "the frames carry no payload: {}",
            out.queued()
        );
        let mut inbox = Inbox::default();
        while out.flush(&a).map(|done| !done).unwrap() {
            inbox.fill(&b).unwrap();
        }
        inbox.fill(&b).unwrap();
        let got = inbox.next().unwrap().unwrap();
        assert_eq!(got, msg);
        let Msg::Restore {
            state: WireBytes::Sealed(blob),
            ..
        } = got
        else {
            panic!("not sealed on arrival: {got:?}");
        };
        assert_eq!(&blob[..], &big[..], "read in place, the same bytes");
        let Some(Msg::Done { bytes, .. }) = inbox.next().unwrap() else {
            panic!("the second frame")
        };
        assert_eq!(bytes.into_vec(), big[1..].to_vec());
        assert!(inbox.fds.is_empty(), "each frame took its own fd");

        // A frame announcing sealed bytes whose fd did not come, or whose fd is not a sealed
        // memfd of that size: an error naming why, never a mapping that could fault.
        let frame = Msg::Done {
            req: 4,
            bytes: WireBytes::new(big.clone()),
        }
        .encode();
        let mut inbox = Inbox {
            buf: frame.clone(),
            ..Inbox::default()
        };
        assert!(matches!(inbox.next(), Err(WireError::Sealed(why)) if why.contains("fd")));
        let mut inbox = Inbox {
            buf: frame,
            ..Inbox::default()
        };
        inbox
            .fds
            .push_back(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        assert!(matches!(inbox.next(), Err(WireError::Sealed(why)) if why.contains("map")));
    }

    #[test]
    fn damaged_truncated_oversized_and_unknown_frames_are_errors() {
        let good = Msg::Ping { seq: 1 }.encode();
        // A flipped bit anywhere in the body: checksum, magic or length error, never a panic.
        for i in 4..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            let mut inbox = Inbox {
                buf: bad,
                ..Inbox::default()
            };
            assert!(inbox.next().is_err(), "byte {i} flipped");
        }
        // Cut short: not a message yet (more may come); the reader waits.
        let mut inbox = Inbox {
            buf: good[..good.len() - 1].to_vec(),
            ..Inbox::default()
        };
        assert_eq!(inbox.next().unwrap(), None);
        // Oversized: refused from the prefix alone, nothing allocated for it.
        let mut inbox = Inbox {
            buf: u32::MAX.to_le_bytes().to_vec(),
            ..Inbox::default()
        };
        assert_eq!(
            inbox.next().unwrap_err(),
            WireError::Oversized(u32::MAX as usize)
        );
        // An intact snapshot with a tag nobody knows.
        let mut w = SnapshotWriter::new(KIND, VERSION);
        w.u8(200);
        let body = w.finish();
        assert_eq!(
            Msg::decode(&body, &mut || None),
            Err(WireError::Unknown("message", 200))
        );
        // Trailing garbage inside an intact body.
        let mut w = SnapshotWriter::new(KIND, VERSION);
        w.u8(T_PING).u64(1).u8(0);
        assert!(matches!(
            Msg::decode(&w.finish(), &mut || None),
            Err(WireError::Snapshot(SnapshotError::TrailingBytes { .. }))
        ));
    }
}
