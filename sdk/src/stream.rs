//! Bounded result streams from background threads to a main-thread handler.

use crate::internal::panic::catch;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::internal::sync::lock;
use crate::main_thread::{post_task, Main, MainTask, Step};
use crate::shared::Shared;

type Handler<T> = Box<dyn FnMut(T, &mut Main<'_>) + Send>;

struct StreamInner<T> {
    rx: Receiver<T>,
    handler: Mutex<Handler<T>>,
    /// A drain task is queued on the main thread (or running).
    scheduled: AtomicBool,
}

impl<T: Send + 'static> StreamInner<T> {
    /// Same coalescing rule as the doorbell: only the sender that raises `scheduled` posts.
    fn schedule(self: &Arc<Self>, shared: &Arc<Shared>) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            let inner = self.clone();
            let posted = post_task(
                shared,
                MainTask::Chunked(Box::new(move |main| inner.drain(main))),
            );
            if posted.is_err() {
                self.scheduled.store(false, Ordering::Release);
            }
        }
    }

    fn drain(&self, main: &mut Main<'_>) -> Step {
        self.scheduled.swap(false, Ordering::AcqRel);
        let mut handler = lock(&self.handler);
        loop {
            let Ok(item) = self.rx.try_recv() else {
                return Step::Done;
            };
            if catch(|| handler(item, main)).is_err() {
                main.handle().shared().stats.record_main_panic();
            }
            // After every item, as the pump does: a handler may be slow, and no item starts
            // once the budget is spent.
            if main.time_left().is_zero() {
                if self.rx.is_empty() {
                    return Step::Done;
                }
                // Stay scheduled: we continue at the next pump, producers need not post.
                self.scheduled.store(true, Ordering::Release);
                return Step::Continue;
            }
        }
    }
}

/// Why [`StreamSender::try_send`] or [`StreamSender::send_timeout`] gave the item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The stream holds `capacity` items the main thread has not handled yet.
    Full(T),
    /// The runtime is shut down.
    ShutDown(T),
}

impl<T> TrySendError<T> {
    /// The item that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(t) | TrySendError::ShutDown(t) => t,
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("stream is full"),
            TrySendError::ShutDown(_) => f.write_str("runtime is shut down"),
        }
    }
}

impl<T: fmt::Debug> std::error::Error for TrySendError<T> {}

/// The sending end of a bounded stream whose items are handled on the main thread, in order.
///
/// Made by [`Handle::stream`](crate::Handle::stream). Memory stays bounded when the host stops
/// pumping: at most `capacity` items wait, and senders then block ([`send`](Self::send)), time
/// out ([`send_timeout`](Self::send_timeout)) or get the item back
/// ([`try_send`](Self::try_send)). Clone it to send from several threads.
pub struct StreamSender<T> {
    tx: Sender<T>,
    inner: Arc<StreamInner<T>>,
    shared: Arc<Shared>,
}

impl<T> Clone for StreamSender<T> {
    fn clone(&self) -> Self {
        StreamSender {
            tx: self.tx.clone(),
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for StreamSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSender")
            .field("queued", &self.tx.len())
            .field("capacity", &self.tx.capacity())
            .finish()
    }
}

impl<T: Send + 'static> StreamSender<T> {
    pub(crate) fn new<F>(shared: Arc<Shared>, capacity: usize, handler: F) -> Self
    where
        F: FnMut(T, &mut Main<'_>) + Send + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        StreamSender {
            tx,
            inner: Arc::new(StreamInner {
                rx,
                handler: Mutex::new(Box::new(handler)),
                scheduled: AtomicBool::new(false),
            }),
            shared,
        }
    }

    /// Sends without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when `capacity` items are waiting, [`TrySendError::ShutDown`]
    /// after shutdown; both give the item back.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        if self.shared.is_shutting_down() {
            return Err(TrySendError::ShutDown(item));
        }
        match self.tx.try_send(item) {
            Ok(()) => {
                self.inner.schedule(&self.shared);
                Ok(())
            }
            Err(crossbeam_channel::TrySendError::Full(t)) => Err(TrySendError::Full(t)),
            Err(crossbeam_channel::TrySendError::Disconnected(t)) => Err(TrySendError::ShutDown(t)),
        }
    }

    /// Sends, waiting up to `timeout` for room.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send); `Full` means the host did not make room in time.
    pub fn send_timeout(&self, item: T, timeout: Duration) -> Result<(), TrySendError<T>> {
        if self.shared.is_shutting_down() {
            return Err(TrySendError::ShutDown(item));
        }
        if self.shared.is_main_thread() {
            // The main thread drains the stream; waiting for itself would only waste `timeout`.
            return self.try_send(item);
        }
        match self.tx.send_timeout(item, timeout) {
            Ok(()) => {
                self.inner.schedule(&self.shared);
                Ok(())
            }
            Err(crossbeam_channel::SendTimeoutError::Timeout(t)) => Err(TrySendError::Full(t)),
            Err(crossbeam_channel::SendTimeoutError::Disconnected(t)) => {
                Err(TrySendError::ShutDown(t))
            }
        }
    }

    /// Sends, blocking while the stream is full (back-pressure) until the main thread makes
    /// room or the runtime shuts down.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] if the runtime shuts down first (the item is dropped);
    /// [`Error::WrongThread`] on the main thread when the stream is full, since blocking there
    /// would wait for itself.
    pub fn send(&self, item: T) -> Result<()> {
        if self.shared.is_main_thread() {
            return match self.try_send(item) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => Err(Error::WrongThread),
                Err(TrySendError::ShutDown(_)) => Err(Error::ShutDown),
            };
        }
        if self.shared.is_shutting_down() {
            return Err(Error::ShutDown);
        }
        let shutdown = &self.shared.life.shutdown_signal;
        crossbeam_channel::select! {
            send(self.tx, item) -> res => match res {
                Ok(()) => {
                    self.inner.schedule(&self.shared);
                    Ok(())
                }
                Err(_) => Err(Error::ShutDown),
            },
            recv(shutdown) -> _ => Err(Error::ShutDown),
        }
    }

    /// Items waiting for the main thread.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// The stream's capacity.
    pub fn capacity(&self) -> usize {
        self.tx.capacity().unwrap_or(usize::MAX)
    }
}

/// Streams: the stream half of [`Handle`]'s API.
impl Handle {
    /// A bounded stream of `T` handled on the main thread by `handler`, in send order, at most
    /// `capacity` waiting. See [`StreamSender`].
    pub fn stream<T, F>(&self, capacity: usize, handler: F) -> StreamSender<T>
    where
        T: Send + 'static,
        F: FnMut(T, &mut Main<'_>) + Send + 'static,
    {
        StreamSender::new(self.shared().clone(), capacity, handler)
    }
}
