//! Host events (frame changed, selection changed, scene opened/saved, playback, shutdown,
//! custom topics), fanned out to main-thread subscribers at the next pump and to background
//! subscribers at once. High-frequency events coalesce by key between two pumps.

use crate::internal::panic::catch;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

use crate::error::Result;
use crate::handle::Handle;
use crate::internal::sync::lock;
use crate::main_thread::{post_task, Main, MainTask, Step};
use crate::shared::Shared;

/// What happened in the host.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The current frame changed (scrubbing, playback). Coalesces: subscribers see the latest.
    FrameChanged {
        /// The new frame (fractional for subframes).
        frame: f64,
    },
    /// The selection changed. Coalesces.
    SelectionChanged,
    /// A scene was opened.
    SceneOpened {
        /// Its path.
        path: String,
    },
    /// The scene was saved.
    SceneSaved {
        /// Its path.
        path: String,
    },
    /// Playback started.
    PlaybackStarted,
    /// Playback stopped.
    PlaybackStopped,
    /// The host is about to quit: finish up.
    ShutdownRequested,
    /// Anything else: a topic and bytes. With `coalesce`, only the latest event of each topic
    /// waiting for a pump is delivered (mouse moves, slider drags).
    Custom {
        /// The topic, e.g. `"viewport/camera"`.
        topic: String,
        /// The event's data.
        bytes: Vec<u8>,
        /// Whether a newer event of the same topic replaces an undelivered older one.
        coalesce: bool,
    },
}

/// The kind of an [`Event`]. The numbers are part of the C ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum EventKind {
    FrameChanged = 1,
    SelectionChanged = 2,
    SceneOpened = 3,
    SceneSaved = 4,
    PlaybackStarted = 5,
    PlaybackStopped = 6,
    ShutdownRequested = 7,
    Custom = 8,
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::FrameChanged { .. } => EventKind::FrameChanged,
            Event::SelectionChanged => EventKind::SelectionChanged,
            Event::SceneOpened { .. } => EventKind::SceneOpened,
            Event::SceneSaved { .. } => EventKind::SceneSaved,
            Event::PlaybackStarted => EventKind::PlaybackStarted,
            Event::PlaybackStopped => EventKind::PlaybackStopped,
            Event::ShutdownRequested => EventKind::ShutdownRequested,
            Event::Custom { .. } => EventKind::Custom,
        }
    }

    /// Whether a newer event may replace an undelivered one (see [`Event::supersedes`]).
    fn coalesces(&self) -> bool {
        matches!(
            self,
            Event::FrameChanged { .. }
                | Event::SelectionChanged
                | Event::Custom { coalesce: true, .. }
        )
    }

    /// Whether `self` replaces an undelivered `older` event.
    fn supersedes(&self, older: &Event) -> bool {
        match (self, older) {
            (Event::FrameChanged { .. }, Event::FrameChanged { .. })
            | (Event::SelectionChanged, Event::SelectionChanged) => true,
            (
                Event::Custom {
                    topic: a,
                    coalesce: true,
                    ..
                },
                Event::Custom { topic: b, .. },
            ) => a == b,
            _ => false,
        }
    }
}

/// Which events a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventFilter {
    /// Every event.
    All,
    /// Events of one kind.
    Kind(EventKind),
    /// Custom events of one topic.
    Topic(String),
}

impl EventFilter {
    fn matches(&self, e: &Event) -> bool {
        match self {
            EventFilter::All => true,
            EventFilter::Kind(k) => e.kind() == *k,
            EventFilter::Topic(t) => matches!(e, Event::Custom { topic, .. } if topic == t),
        }
    }
}

/// Identifies a subscription, for [`Handle::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subscription(u64);

impl Subscription {
    /// A number identifying the subscription (unique within its runtime).
    pub fn id(&self) -> u64 {
        self.0
    }
}

type Callback = Box<dyn FnMut(&Event, &mut Main<'_>) + Send>;

struct MainSub {
    id: u64,
    filter: EventFilter,
    active: AtomicBool,
    callback: Mutex<Callback>,
}

struct ChannelSub {
    id: u64,
    filter: EventFilter,
    tx: Sender<Event>,
}

/// The event hub of one runtime.
#[derive(Default)]
pub(crate) struct Events {
    next_id: AtomicU64,
    main_subs: Mutex<Vec<Arc<MainSub>>>,
    channel_subs: Mutex<Vec<ChannelSub>>,
    /// Events waiting for a pump, coalesced, and whether a dispatcher is queued for them.
    pending: Mutex<Pending>,
    /// Events a full background subscriber channel could not take.
    dropped: AtomicU64,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("pending", &lock(&self.pending).events.len())
            .finish_non_exhaustive()
    }
}

impl Events {
    /// Events a full background subscriber channel could not take.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Main-thread events not yet delivered, and whether a dispatcher item stands for them in
    /// the main-thread queue (it is counted there as one item).
    pub(crate) fn backlog(&self) -> (usize, bool) {
        let p = lock(&self.pending);
        (p.events.len(), p.scheduled)
    }

    /// Background subscribers receive `event` at once (or count it dropped when full).
    fn send_to_channels(&self, event: &Event) {
        for sub in lock(&self.channel_subs).iter() {
            if sub.filter.matches(event) && sub.tx.try_send(event.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn call_main_subs(shared: &Shared, subs: &[Arc<MainSub>], event: &Event, main: &mut Main<'_>) {
    for sub in subs {
        if sub.active.load(Ordering::Acquire) && sub.filter.matches(event) {
            let mut cb = lock(&sub.callback);
            if catch(|| cb(event, main)).is_err() {
                shared.stats.record_main_panic();
            }
        }
    }
}

/// Inside a plugin, on the main thread: hands a host event to the plugin's own subscribers
/// (main-thread ones now, background ones through their channels).
pub(crate) fn deliver_here(shared: &Shared, event: &Event, main: &mut Main<'_>) {
    shared.events.send_to_channels(event);
    let subs = lock(&shared.events.main_subs).clone();
    call_main_subs(shared, &subs, event, main);
}

/// A local runtime's `post_event`: background subscribers now, main-thread ones at the next
/// pump, coalesced.
pub(crate) fn post_here(shared: &Arc<Shared>, event: Event, limited: bool) -> Result<()> {
    let events = &shared.events;
    if lock(&events.main_subs).is_empty() {
        events.send_to_channels(&event);
        return Ok(());
    }
    let schedule = {
        let mut pending = lock(&events.pending);
        let superseded = if event.coalesces() {
            pending.events.iter_mut().find(|old| event.supersedes(old))
        } else {
            None
        };
        match superseded {
            Some(old) => {
                events.send_to_channels(&event);
                *old = event;
            }
            None => {
                // A new entry: refused (before any subscriber saw it) at the backlog limit.
                let limits = &shared.main.limits;
                // (The dispatcher's own queue entry does not count: as `backlog` reports it.)
                let waiting = (shared.main.len() + pending.events.len())
                    .saturating_sub(usize::from(pending.scheduled));
                if limited && waiting >= limits.items.load(Ordering::Relaxed) {
                    limits.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(crate::Error::Backlog);
                }
                events.send_to_channels(&event);
                pending.events.push_back(event);
            }
        }
        !std::mem::replace(&mut pending.scheduled, true)
    };
    if schedule {
        if let Err(e) = post_task(shared, dispatcher(shared.clone())) {
            lock(&events.pending).scheduled = false;
            return Err(e);
        }
    }
    Ok(())
}

/// Events waiting for main-thread subscribers.
#[derive(Default)]
struct Pending {
    events: VecDeque<Event>,
    /// A dispatcher is queued or running: it delivers every event here before it ends.
    scheduled: bool,
}

/// The chunked main-thread item that delivers pending events, one per call, so that a backlog
/// is spread over pumps by their budgets like any chunked item, and each event counts as one
/// item run. It delivers at most the events pending when it first ran, then re-queues itself
/// behind the main-thread items posted meanwhile, so a non-stop event source cannot starve them.
fn dispatcher(shared: Arc<Shared>) -> MainTask {
    let mut quota: Option<usize> = None;
    MainTask::Chunked(Box::new(move |main| {
        let events = &shared.events;
        let event = {
            let mut pending = lock(&events.pending);
            if quota.is_none() {
                quota = Some(pending.events.len());
            }
            match pending.events.pop_front() {
                Some(event) => event,
                None => {
                    pending.scheduled = false;
                    return Step::Done;
                }
            }
        };
        let subs = lock(&events.main_subs).clone();
        call_main_subs(&shared, &subs, &event, main);
        let left = quota.map_or(0, |q| q.saturating_sub(1));
        quota = Some(left);
        let mut pending = lock(&events.pending);
        if pending.events.is_empty() {
            pending.scheduled = false;
            return Step::Done;
        }
        if left > 0 {
            return Step::Continue;
        }
        drop(pending);
        if post_task(&shared, dispatcher(shared.clone())).is_err() {
            // Shut down: nothing will pump these.
            lock(&events.pending).scheduled = false;
        }
        Step::Done
    }))
}

impl Handle {
    /// Posts a host event, from any thread. Background subscribers receive it at once; main
    /// thread subscribers at the next pump, after coalescing (see [`Event`]). Each event is one
    /// main-thread item: a pump delivers pending events in order until its budget is spent and
    /// leaves the rest to the next pump; [`PumpReport`](crate::PumpReport) and
    /// [`QueueDepths::main`](crate::QueueDepths::main) count them one by one.
    ///
    /// # Errors
    ///
    /// [`crate::Error::ShutDown`] after shutdown; [`crate::Error::Backlog`] while the host has
    /// not pumped and the backlog is at its limit, unless the event coalesces into one already
    /// waiting (nothing was queued, and no subscriber saw it).
    pub fn post_event(&self, event: Event) -> Result<()> {
        let shared = self.shared();
        if shared.is_shutting_down() {
            return Err(crate::Error::ShutDown);
        }
        shared.backend.post_event(shared, event, true)
    }

    /// `post_event` for events hostloop forwards (a worker process's copy of its host's
    /// events, admitted by the host already): never refused for the backlog.
    pub(crate) fn post_event_promised(&self, event: Event) -> Result<()> {
        let shared = self.shared();
        if shared.is_shutting_down() {
            return Err(crate::Error::ShutDown);
        }
        shared.backend.post_event(shared, event, false)
    }

    /// Calls `f(event, main)` on the main thread for each event matching `filter`.
    pub fn subscribe<F>(&self, filter: EventFilter, f: F) -> Subscription
    where
        F: FnMut(&Event, &mut Main<'_>) + Send + 'static,
    {
        let events = &self.shared().events;
        let id = events.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&events.main_subs).push(Arc::new(MainSub {
            id,
            filter,
            active: AtomicBool::new(true),
            callback: Mutex::new(Box::new(f)),
        }));
        Subscription(id)
    }

    /// A channel receiving every event matching `filter`, for background threads. At most
    /// `capacity` events wait; when full, new events are dropped for this subscriber and counted
    /// in [`Stats::events_dropped`](crate::Stats::events_dropped).
    pub fn subscribe_channel(
        &self,
        filter: EventFilter,
        capacity: usize,
    ) -> (Subscription, Receiver<Event>) {
        let events = &self.shared().events;
        let id = events.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        lock(&events.channel_subs).push(ChannelSub { id, filter, tx });
        (Subscription(id), rx)
    }

    /// Ends a subscription. Returns whether it existed. Called on the main thread, the callback
    /// never runs after this returns (from another thread, a call already under way on the main
    /// thread may still finish).
    pub fn unsubscribe(&self, sub: Subscription) -> bool {
        let events = &self.shared().events;
        // Removed entries are dropped after the locks are released: their captures' `Drop` (a
        // C finalizer) may call back into the runtime.
        let mut removed_main = Vec::new();
        lock(&events.main_subs).retain(|s| {
            if s.id == sub.0 {
                s.active.store(false, Ordering::Release);
                removed_main.push(s.clone());
            }
            s.id != sub.0
        });
        let mut removed_channel = Vec::new();
        {
            let mut subs = lock(&events.channel_subs);
            if let Some(i) = subs.iter().position(|s| s.id == sub.0) {
                removed_channel.push(subs.remove(i));
            }
        }
        let found = !removed_main.is_empty() || !removed_channel.is_empty();
        drop(removed_main);
        drop(removed_channel);
        found
    }
}
