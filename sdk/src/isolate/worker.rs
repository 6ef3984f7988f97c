//! The worker process's side: a headless host for one or more plugins.
//!
//! The worker is a hostloop host like any other: it builds a [`Runtime`], loads each plugin with
//! [`Handle::load_plugin`](crate::Handle::load_plugin) — the same loader, the same services table
//! — and pumps it. What the plugins send to the sink goes to the host as frames; the host's events
//! come in as frames and are posted to the worker's runtime. So a plugin cannot tell where it
//! runs. One thread (this process's main thread) does all of it, with one `mio` poll over the
//! host socket and the runtime's doorbell.

use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::shm::{self, Pool};
use super::wire::{Inbox, Msg, Outbox, WireBytes, WirePayload};
use crate::internal::sync::lock;
use crate::plugin::LoadedPlugin;
use crate::runtime::Runtime;
use crate::sink::{Message, Payload};

const SOCKET: Token = Token(0);
const DOORBELL: Token = Token(1);

/// The budget of one of the worker's pumps.
const PUMP_BUDGET: Duration = Duration::from_millis(8);
/// Frames queued for the host above which the worker stops pumping until they are written.
const OUTBOX_LIMIT: usize = 4 << 20;

/// What the worker was told on its command line.
#[derive(Debug)]
struct Args {
    fd: RawFd,
    workers: usize,
    parent: Option<u32>,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut fd = None;
    let mut workers = 0;
    let mut parent = None;
    let mut args = args.skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match a.as_str() {
            "--fd" => fd = Some(value("--fd")? as RawFd),
            "--workers" => workers = value("--workers")? as usize,
            "--parent" => parent = Some(value("--parent")? as u32),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        fd: fd.ok_or("--fd <socket> is required")?,
        workers,
        parent,
    })
}

/// The `hostloop-worker` program: `hostloop-worker --fd <socket> [--workers N] [--parent PID]`.
///
/// Not for direct use: a host starts it, through
/// [`LoadOptions`](crate::plugin::LoadOptions), with one end of a socket pair as `--fd`.
#[doc(hidden)]
pub fn worker_main() -> ExitCode {
    let args = match parse(std::env::args()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hostloop-worker: {e}");
            eprintln!("usage: hostloop-worker --fd <socket> [--workers N] [--parent PID]");
            eprintln!("(a host starts this program; it is not run by hand)");
            return ExitCode::from(2);
        }
    };
    // The socket is the primary orphan guard (EOF when the host goes); the death signal is a
    // second line, re-checked against a host that died before it was set.
    #[cfg(target_os = "linux")]
    if let Some(parent) = args.parent {
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
        let ppid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
        if ppid != parent {
            return ExitCode::from(3);
        }
    }
    // SAFETY: the host passed this fd, open, for this process to own; nothing else uses it.
    let sock = unsafe { UnixStream::from_raw_fd(args.fd) };
    match serve(sock, args.workers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostloop-worker: {e}");
            ExitCode::from(4)
        }
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

struct Worker {
    rt: Runtime,
    plugins: HashMap<u32, LoadedPlugin>,
    out: Arc<Mutex<Out>>,
    emitted: Arc<AtomicBool>,
    /// The last pump whose messages the host has not acknowledged.
    awaiting: Option<u64>,
    want_pump: bool,
    quit: bool,
    /// Pool tasks running on threads of their own: their cancel flags.
    tasks: HashMap<u64, (Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

/// What goes to the host, shared by the loop and the sink.
#[derive(Default)]
struct Out {
    outbox: Outbox,
    /// Shared-memory regions for large payloads.
    pool: Pool,
    /// The number the current pump's `flushed` will carry.
    next_seq: u64,
}

impl Out {
    /// One sink message: inline, or through a region when it is large.
    fn emit(&mut self, topic: &str, payload: Payload<'_>) {
        let (bytes, layout) = match payload {
            Payload::Bytes(b) => (b, (0, 0, 0, 0)),
            Payload::Array(a) => (
                a.bytes(),
                (
                    a.elem() as u32,
                    a.components() as u64,
                    a.count() as u64,
                    a.stride() as u64,
                ),
            ),
        };
        if bytes.len() >= shm::INLINE_MAX && bytes.len() as u64 <= shm::MAX_REGION {
            // A region could not be made (no memfds here, or out of memory): inline instead.
            if let Ok(Some(put)) = self.pool.put(bytes, self.next_seq) {
                for id in put.dropped {
                    self.outbox.push(&Msg::Unmap { id });
                }
                if let Some((fd, size)) = put.new {
                    self.outbox.push_with_fd(
                        &Msg::Region {
                            id: put.region,
                            size,
                        },
                        fd,
                    );
                }
                let (elem, components, count, stride) = layout;
                self.outbox.push(&Msg::Emit {
                    topic: topic.to_owned(),
                    payload: WirePayload::Shared {
                        elem,
                        components,
                        count,
                        stride,
                        region: put.region,
                        len: bytes.len() as u64,
                    },
                });
                return;
            }
        }
        self.outbox.push(&Msg::Emit {
            topic: topic.to_owned(),
            payload: wire_payload(payload),
        });
    }
}

fn serve(sock: UnixStream, workers: usize) -> io::Result<()> {
    sock.set_nonblocking(true)?;
    let mut builder = Runtime::builder().thread_name("hostloop-worker");
    if workers > 0 {
        builder = builder.workers(workers);
    }
    let rt = builder.build()?;
    let out = Arc::new(Mutex::new(Out {
        next_seq: 1,
        ..Out::default()
    }));
    let emitted = Arc::new(AtomicBool::new(false));
    {
        let (out, emitted) = (out.clone(), emitted.clone());
        rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
            lock(&out).emit(m.topic, m.payload);
            emitted.store(true, Ordering::Relaxed);
        })));
    }
    lock(&out).outbox.push(&Msg::Hello {
        pid: std::process::id(),
    });

    let mut poll = Poll::new()?;
    let sock_fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    poll.registry().register(
        &mut SourceFd(&sock_fd),
        SOCKET,
        Interest::READABLE | Interest::WRITABLE,
    )?;
    let bell = rt.doorbell_fd();
    poll.registry()
        .register(&mut SourceFd(&bell), DOORBELL, Interest::READABLE)?;

    let mut w = Worker {
        rt,
        plugins: HashMap::new(),
        out,
        emitted,
        awaiting: None,
        want_pump: true,
        quit: false,
        tasks: HashMap::new(),
    };
    let mut inbox = Inbox::default();
    let mut events = Events::with_capacity(8);
    let mut host_gone = false;
    while !w.quit && !host_gone {
        let flushed = lock(&w.out).outbox.flush(&sock);
        if flushed.is_err() {
            break; // the host is gone
        }
        let can_pump =
            w.want_pump && w.awaiting.is_none() && lock(&w.out).outbox.queued() < OUTBOX_LIMIT;
        let timeout = if can_pump {
            Duration::ZERO
        } else {
            Duration::from_secs(1)
        };
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let mut readable = false;
        for ev in events.iter() {
            match ev.token() {
                SOCKET => readable |= ev.is_readable() || ev.is_read_closed(),
                DOORBELL => w.want_pump = true,
                _ => {}
            }
        }
        if readable || inbox.is_full() {
            host_gone = !inbox.fill(&sock)?;
        }
        while let Some(msg) = inbox.next().map_err(other)? {
            if let Msg::Blob { name, size } = msg {
                // The host's blob: mapped here, for this worker's plugins to read in place.
                let fd = inbox
                    .fds
                    .pop_front()
                    .ok_or_else(|| other("a blob frame without its fd"))?;
                let blob = crate::blob::Blob::from_fd(&name, fd, size).map_err(other)?;
                w.rt.handle().shared().blobs.adopt(blob);
                continue;
            }
            w.handle(msg)?;
        }
        if w.want_pump && w.awaiting.is_none() && lock(&w.out).outbox.queued() < OUTBOX_LIMIT {
            let report = w.rt.pump(PUMP_BUDGET).map_err(other)?;
            w.want_pump = report.remaining > 0;
        }
        w.tasks.retain(|_, (_, t)| !t.is_finished());
        if w.emitted.swap(false, Ordering::Relaxed) {
            let mut out = lock(&w.out);
            let seq = out.next_seq;
            out.next_seq += 1;
            out.outbox.push(&Msg::Flushed { seq });
            w.awaiting = Some(seq);
        }
    }
    // The host asked us to quit, or went away. Running tasks are cancelled and given a moment;
    // a task that ignores cancellation still runs the plugin's code, which must not be unloaded
    // under it: then the process just exits.
    for (cancel, _) in w.tasks.values() {
        cancel.store(true, Ordering::Release);
    }
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while w.tasks.values().any(|(_, t)| !t.is_finished()) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    if w.tasks.values().any(|(_, t)| !t.is_finished()) {
        std::process::exit(0);
    }
    // Unload everything, within bounded time.
    let plugins: Vec<LoadedPlugin> = w.plugins.drain().map(|(_, p)| p).collect();
    for p in plugins {
        p.unload(Duration::from_secs(2));
    }
    w.rt.shutdown(Duration::from_secs(2));
    if w.quit {
        // Best effort: the host may read the rest (it does not wait for it).
        let _ = lock(&w.out).outbox.flush(&sock);
    }
    Ok(())
}

fn wire_payload(p: Payload<'_>) -> WirePayload {
    match p {
        Payload::Bytes(b) => WirePayload::Bytes(b.to_vec()),
        Payload::Array(a) => WirePayload::Array {
            elem: a.elem() as u32,
            components: a.components() as u64,
            count: a.count() as u64,
            stride: a.stride() as u64,
            bytes: a.bytes().to_vec(),
        },
    }
}

impl Worker {
    fn reply(&self, msg: Msg) {
        lock(&self.out).outbox.push(&msg);
    }

    fn failed(&self, req: u64, e: &crate::plugin::PluginError) {
        self.reply(Msg::Failed {
            req,
            status: e.status(),
            reason: e.reason().to_owned(),
        });
    }

    fn no_slot(&self, req: u64, slot: u32) {
        self.reply(Msg::Failed {
            req,
            status: crate::abi::HL_STATUS_INVALID_HANDLE,
            reason: format!("no plugin in slot {slot} of this worker"),
        });
    }

    fn handle(&mut self, msg: Msg) -> io::Result<()> {
        match msg {
            Msg::Load { req, slot, path } => match self.rt.load_plugin(&path) {
                Ok(p) => {
                    let info = p.info();
                    self.plugins.insert(slot, p);
                    self.reply(Msg::Loaded {
                        req,
                        name: info.name,
                        version: info.version,
                        flags: info.flags,
                    });
                }
                Err(e) => self.failed(req, &e),
            },
            Msg::Unload {
                req,
                slot,
                deadline_ms,
            } => match self.plugins.remove(&slot) {
                Some(p) => {
                    p.unload(Duration::from_millis(deadline_ms));
                    self.reply(Msg::Done {
                        req,
                        bytes: WireBytes::default(),
                    });
                }
                None => self.no_slot(req, slot),
            },
            Msg::Reload {
                req,
                slot,
                path,
                deadline_ms,
            } => match self.plugins.get_mut(&slot) {
                Some(p) => match p.reload(&path, Duration::from_millis(deadline_ms)) {
                    Ok(()) => {
                        // The new build's version, for the host's `info`.
                        let bytes = p.info().version.into_bytes();
                        self.reply(Msg::Done {
                            req,
                            bytes: bytes.into(),
                        });
                    }
                    Err(e) => self.failed(req, &e),
                },
                None => self.no_slot(req, slot),
            },
            Msg::Save { req, slot } => match self.plugins.get(&slot) {
                Some(p) => match p.checkpoint() {
                    Ok(bytes) => self.reply(Msg::Done {
                        req,
                        bytes: WireBytes::new(bytes.unwrap_or_default()),
                    }),
                    Err(e) => self.failed(req, &e),
                },
                None => self.no_slot(req, slot),
            },
            Msg::Restore { req, slot, state } => match self.plugins.get(&slot) {
                Some(p) => match p.restore_state(&state) {
                    Ok(()) => self.reply(Msg::Done {
                        req,
                        bytes: WireBytes::default(),
                    }),
                    Err(e) => self.failed(req, &e),
                },
                None => self.no_slot(req, slot),
            },
            Msg::Event(e) => {
                // Refused only after shutdown, which this loop does not reach while it runs.
                let _ = self.rt.post_event_promised(e);
                self.want_pump = true;
            }
            Msg::Ack { seq } => {
                // Its regions may be written again: the host has delivered their messages.
                lock(&self.out).pool.release(seq);
                if self.awaiting == Some(seq) {
                    self.awaiting = None;
                }
            }
            Msg::Ping { seq } => self.reply(Msg::Pong { seq }),
            Msg::RunTask {
                req,
                slot,
                name,
                input,
            } => self.run_task(req, slot, name, input)?,
            Msg::CancelTask { req } => {
                if let Some((cancel, _)) = self.tasks.get(&req) {
                    cancel.store(true, Ordering::Release);
                }
            }
            Msg::Quit => self.quit = true,
            other => {
                return Err(other_msg(&other));
            }
        }
        Ok(())
    }
}

impl Worker {
    /// Starts pool task `req` on a thread of its own; its answer (and progress) go to the host
    /// from there, and the loop is woken to write them.
    fn run_task(&mut self, req: u64, slot: u32, name: String, input: WireBytes) -> io::Result<()> {
        let Some(runner) = self.plugins.get(&slot).and_then(LoadedPlugin::task_runner) else {
            self.no_slot(req, slot);
            return Ok(());
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let (out, handle, flag) = (self.out.clone(), self.rt.handle().clone(), cancel.clone());
        let thread = std::thread::Builder::new()
            .name("hostloop-task".to_owned())
            .spawn(move || {
                let mut last = -1.0f32;
                let mut progress = |fraction: f32| {
                    if fraction - last >= 0.01 || fraction >= 1.0 {
                        last = fraction;
                        lock(&out).outbox.push(&Msg::TaskProgress { req, fraction });
                        let _ = handle.post_promised(|_| {});
                    }
                };
                let answer = match runner.run(&name, &input, &flag, &mut progress) {
                    Ok(bytes) => Msg::Done {
                        req,
                        bytes: WireBytes::new(bytes),
                    },
                    Err((status, reason)) => Msg::Failed {
                        req,
                        status,
                        reason,
                    },
                };
                lock(&out).outbox.push(&answer);
                // A no-op main-thread item rings the doorbell: the loop wakes and writes it.
                let _ = handle.post_promised(|_| {});
            })?;
        self.tasks.insert(req, (cancel, thread));
        Ok(())
    }
}

fn other_msg(m: &Msg) -> io::Error {
    io::Error::other(format!(
        "the host sent a message only a worker sends ({})",
        m.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, String> {
        parse(std::iter::once("hostloop-worker".to_owned()).chain(a.iter().map(|s| s.to_string())))
    }

    #[test]
    fn the_command_line_is_checked() {
        let a = args(&["--fd", "5", "--workers", "3", "--parent", "77"]).unwrap();
        assert_eq!((a.fd, a.workers, a.parent), (5, 3, Some(77)));
        assert!(args(&[]).unwrap_err().contains("--fd"));
        assert!(args(&["--fd"]).unwrap_err().contains("number"));
        assert!(args(&["--fd", "x"]).unwrap_err().contains("number"));
        assert!(args(&["--fd", "3", "--bogus"])
            .unwrap_err()
            .contains("bogus"));
    }
}
