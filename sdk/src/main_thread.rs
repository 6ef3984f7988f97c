//! The main-thread side: the queue of main-thread work ([`MainQueue`]), posting to it, `pump`
//! and `run_until`, `call_on_main`, and what main-thread items see ([`Main`]).

use crate::internal::panic::catch;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use crossbeam_utils::CachePadded;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::internal::clock::{Calibration, Deadline, Stamp};
use crate::internal::doorbell::Doorbell;
use crate::internal::mainq::{Link, Peek, Queue};
use crate::job::JobRef;
use crate::shared::Shared;

/// What a chunked main-thread item tells `pump` after each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The item is finished; `pump` drops it.
    Done,
    /// The item has more to do: `pump` calls it again while budget remains, otherwise on the
    /// next pump, before any item queued after it (FIFO order holds).
    Continue,
}

/// What one call to [`Handle::pump`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PumpReport {
    /// Main-thread items run (each call of a chunked item counts once, and so does each host
    /// event delivered to main-thread subscribers).
    pub ran: usize,
    /// Items still queued when the pump returned, each undelivered host event counted as one
    /// (the doorbell stays rung while this is > 0).
    pub remaining: usize,
    /// Wall-clock time the pump took.
    pub elapsed: Duration,
    /// How far past the budget the pump ran (zero when within budget).
    pub overrun: Duration,
}

/// What [`Handle::run_until`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunReport {
    /// Whether `until` returned `true` (`false`: the timeout passed first).
    pub finished: bool,
    /// Pumps run.
    pub pumps: u64,
    /// Main-thread items those pumps ran.
    pub ran: u64,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
}

/// The main thread's view while it runs queued work: given to `on_main` continuations, posted
/// items and stream handlers.
pub struct Main<'a> {
    handle: &'a Handle,
    deadline: Instant,
}

impl fmt::Debug for Main<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Main")
            .field("time_left", &self.time_left())
            .finish()
    }
}

impl<'a> Main<'a> {
    pub(crate) fn new(handle: &'a Handle, deadline: Instant) -> Self {
        Main { handle, deadline }
    }

    /// The runtime: spawn follow-up jobs, post more main-thread work.
    pub fn handle(&self) -> &'a Handle {
        self.handle
    }

    /// Budget left in the current pump (zero outside a pump or once spent). Chunked items use
    /// it to size their next slice.
    pub fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

pub(crate) type OnceItem = Box<dyn FnOnce(&mut Main<'_>) + Send>;
type ChunkedItem = Box<dyn FnMut(&mut Main<'_>) -> Step + Send>;

/// One unit of main-thread work.
pub(crate) enum MainTask {
    Once(OnceItem),
    Chunked(ChunkedItem),
    /// A finished job's `on_main` continuation.
    Deliver(JobRef),
}

impl MainTask {
    /// Runs the task; returns it back if it asked to continue.
    pub(crate) fn run(self, main: &mut Main<'_>) -> Option<MainTask> {
        match self {
            MainTask::Once(f) => f(main),
            MainTask::Chunked(mut f) => {
                if f(main) == Step::Continue {
                    return Some(MainTask::Chunked(f));
                }
            }
            MainTask::Deliver(job) => job.deliver(main),
        }
        None
    }
}

/// Main-thread work as a backend queues it: an item, or a job whose progress listener must run.
pub(crate) enum MainItem {
    Task(MainTask),
    /// Queued at most once per pump per job (the job's progress slot holds one entry at a time).
    Progress(JobRef),
}

impl MainItem {
    /// Drops the item unrun (shutdown, unload). A job outlives its queue entry (its handle may
    /// live on): release what its callbacks captured now, not whenever the handle goes.
    pub(crate) fn release(self) {
        match self {
            MainItem::Task(MainTask::Deliver(job)) | MainItem::Progress(job) => {
                job.release_callbacks()
            }
            other => drop(other),
        }
    }
}

/// How a queued item runs, is dropped unrun, and is freed: one table per item type.
struct NodeVt {
    /// Runs the item; `Step::Continue` leaves it in the node, to run again.
    run: unsafe fn(*mut Link, &mut Main<'_>) -> Step,
    /// Drops the item unrun, as [`MainItem::release`] does (no-op if it is gone).
    release: unsafe fn(*mut Link),
    /// Frees the node, with an item still in it.
    free: unsafe fn(*mut Link),
}

/// One queued main-thread item: one allocation holding the link, its table and the item.
#[repr(C)]
struct Node<T> {
    link: Link,
    vt: &'static NodeVt,
    item: Option<T>,
}

/// What a node can hold.
trait Queued: Send + Sized + 'static {
    /// Runs the item in `slot`, taking it when it is done.
    fn run(slot: &mut Option<Self>, main: &mut Main<'_>) -> Step;
    /// Drops it unrun.
    fn release(self) {}
}

impl<T: Queued> Node<T> {
    const VT: NodeVt = NodeVt {
        run: Self::run,
        release: Self::release,
        free: Self::free,
    };

    fn alloc(item: Option<T>) -> *mut Link {
        Box::into_raw(Box::new(Node {
            link: Link::new(),
            vt: &Self::VT,
            item,
        }))
        .cast()
    }

    /// # Safety (the three below)
    ///
    /// `link` is the link of a live `Node<T>` that only the caller (the queue's consumer)
    /// touches.
    unsafe fn run(link: *mut Link, main: &mut Main<'_>) -> Step {
        // SAFETY: a live `Node<T>`, the caller's alone.
        T::run(unsafe { &mut (*link.cast::<Self>()).item }, main)
    }

    unsafe fn release(link: *mut Link) {
        // SAFETY: a live `Node<T>`, the caller's alone.
        if let Some(item) = unsafe { (*link.cast::<Self>()).item.take() } {
            item.release();
        }
    }

    unsafe fn free(link: *mut Link) {
        // SAFETY: made by `Box::into_raw` in `alloc`, and no longer reachable from the queue.
        drop(unsafe { Box::from_raw(link.cast::<Self>()) });
    }
}

/// The vtable of a node, read through its link.
///
/// # Safety
///
/// `link` is the link of a live node.
unsafe fn vt(link: *mut Link) -> &'static NodeVt {
    // SAFETY: every node is a `#[repr(C)] Node<T>`: `vt` follows the link whatever `T` is.
    unsafe { (*link.cast::<Node<()>>()).vt }
}

/// The queue's first stub, and nodes whose item is gone.
impl Queued for () {
    fn run(_: &mut Option<()>, _: &mut Main<'_>) -> Step {
        Step::Done
    }
}

/// A closure posted with `post`: in the node itself, no second allocation.
struct OnceFn<F>(F);

impl<F: FnOnce(&mut Main<'_>) + Send + 'static> Queued for OnceFn<F> {
    fn run(slot: &mut Option<Self>, main: &mut Main<'_>) -> Step {
        if let Some(OnceFn(f)) = slot.take() {
            f(main);
        }
        Step::Done
    }
}

impl Queued for MainItem {
    fn run(slot: &mut Option<Self>, main: &mut Main<'_>) -> Step {
        if let Some(MainItem::Task(MainTask::Chunked(f))) = slot {
            let step = f(main);
            if step == Step::Done {
                *slot = None;
            }
            return step;
        }
        match slot.take() {
            Some(MainItem::Task(task)) => {
                // Not chunked (handled above), so it does not continue.
                let _ = task.run(main);
            }
            Some(MainItem::Progress(job)) => job.deliver_progress(main),
            None => {}
        }
        Step::Done
    }

    fn release(self) {
        MainItem::release(self);
    }
}

/// The main-thread queue of a local runtime and the pump's state: the FIFO list of items (its
/// protocol, with the doorbell's, in `internal/mainq.rs`), the progress listeners to run at the
/// next pump, and the doorbell.
pub(crate) struct MainQueue {
    list: Queue,
    /// Progress entries, and what must run after them (see [`post_after_progress`]).
    progress_tx: Sender<MainItem>,
    progress_rx: Receiver<MainItem>,
    pub(crate) doorbell: Doorbell,
    /// What producers that can be told no may leave waiting (see [`MainQueue::admit`]).
    pub(crate) limits: Limits,
    /// Written by every pump: on a line of its own, away from what producers touch.
    pump: CachePadded<PumpSide>,
}

/// What only the pump (or shutdown, which claims the consumer side the same way) writes.
struct PumpSide {
    /// The consumer side is claimed: by a pump, or by shutdown dropping what is queued.
    in_pump: AtomicBool,
    /// `run_until` is asking its `until` condition: `pump` and `run_until` are refused there.
    in_until: AtomicBool,
    /// The list's stub holds a chunked item that asked to continue: it runs first next time.
    carrying: AtomicBool,
    /// Items taken off the list (published at the end of each pump: `pushed - taken` is the
    /// length).
    taken: AtomicUsize,
    /// A pump met a large backlog: return its memory once the queue is empty. (Here, not in
    /// [`Limits`], which every post reads.)
    trim_due: AtomicBool,
    /// The TSC's rate, for the per-item deadline check.
    clock: Calibration,
}

// SAFETY: the list's nodes hold `Send` items; the consumer side is used by one thread at a
// time (whoever claimed `in_pump`).
unsafe impl Send for MainQueue {}
// SAFETY: as above.
unsafe impl Sync for MainQueue {}

/// Spins (`spin_loop`, tens of ns each) a pump that has run items waits for the next post
/// before it parks the empty queue.
const PARK_SPINS: u32 = 64;
/// Spins the pump waits for a producer between its swap and its link.
const BUSY_SPINS: u32 = 64;

/// How a drain of the list ended.
enum Drained {
    /// The list was empty and is parked: the next post rings.
    Parked,
    /// Work is left (the budget ran out, or a producer is between its two steps).
    Left,
    /// The runtime is shutting down (an item shut it down): everything left was dropped.
    ShutDown,
}

impl MainQueue {
    pub(crate) fn new(doorbell: Doorbell) -> Self {
        let (progress_tx, progress_rx) = crossbeam_channel::unbounded();
        MainQueue {
            list: Queue::new(Node::<()>::alloc(None)),
            progress_tx,
            progress_rx,
            doorbell,
            limits: Limits::default(),
            pump: CachePadded::new(PumpSide {
                in_pump: AtomicBool::new(false),
                in_until: AtomicBool::new(false),
                carrying: AtomicBool::new(false),
                taken: AtomicUsize::new(0),
                trim_due: AtomicBool::new(false),
                clock: Calibration::default(),
            }),
        }
    }

    /// Queues `item` and rings the doorbell if the pump had parked.
    pub(crate) fn push(&self, item: MainItem) -> Result<()> {
        match item {
            MainItem::Progress(_) => self.push_side(item)?,
            item => self.push_node(Node::alloc(Some(item))),
        }
        Ok(())
    }

    /// Queues `item` with the progress entries, which the next pump runs first.
    pub(crate) fn push_side(&self, item: MainItem) -> Result<()> {
        self.progress_tx.send(item).map_err(|_| Error::ShutDown)?;
        if self.list.unpark() {
            self.doorbell.ring();
        }
        Ok(())
    }

    /// Queues `f` in one allocation.
    pub(crate) fn push_fn<F>(&self, f: F)
    where
        F: FnOnce(&mut Main<'_>) + Send + 'static,
    {
        self.push_node(Node::alloc(Some(OnceFn(f))));
    }

    fn push_node(&self, node: *mut Link) {
        // SAFETY: a fresh node, handed to the queue.
        if unsafe { self.list.push(node) } {
            self.doorbell.ring();
        }
    }

    /// Items waiting (not counting a chunked item carried over).
    pub(crate) fn len(&self) -> usize {
        self.list_len() + self.progress_rx.len()
    }

    /// Items waiting in the list: what the backlog limit counts for a post (progress entries,
    /// one per job at most, are left out: a post reads two counters, no channel).
    pub(crate) fn list_len(&self) -> usize {
        let taken = self.pump.taken.load(Ordering::Relaxed);
        self.list.pushed().saturating_sub(taken)
    }

    /// Main-thread work waiting for a pump, as [`PumpReport::remaining`] and
    /// [`QueueDepths::main`](crate::QueueDepths::main) count it: queued items, a carried chunked
    /// item, and each undelivered host event as one item (in place of the one item that
    /// delivers them).
    pub(crate) fn backlog(&self, shared: &Shared, carried: bool) -> usize {
        let (events, dispatcher) = shared.events.backlog();
        (self.len() + usize::from(carried) + events).saturating_sub(usize::from(dispatcher))
    }

    /// Whether a chunked item is carried over to the next pump.
    pub(crate) fn is_carrying(&self) -> bool {
        self.pump.carrying.load(Ordering::Relaxed)
    }

    /// Shutdown: everything queued, the carried chunked item first, released. If a pump is
    /// running (an item it runs shut the runtime down, or shutdown came from another thread),
    /// that pump drops what is left itself, when its item returns.
    pub(crate) fn release_all(&self) -> usize {
        if self.pump.in_pump.swap(true, Ordering::Acquire) {
            return 0;
        }
        // SAFETY: the consumer side is ours (`in_pump`).
        let n = unsafe { self.release_queued() };
        self.pump.in_pump.store(false, Ordering::Release);
        n
    }

    /// Releases the carried item and everything queued; returns how many.
    ///
    /// # Safety
    ///
    /// The caller holds the consumer side (`in_pump`).
    unsafe fn release_queued(&self) -> usize {
        let mut n = 0;
        if self.pump.carrying.swap(false, Ordering::Relaxed) {
            // SAFETY: the stub is live; the consumer's.
            let _ = catch(|| unsafe { release_node(self.list.stub()) });
            n += 1;
        }
        let mut popped = 0;
        // SAFETY: the consumer side is the caller's.
        while let Some((node, old)) = unsafe { self.list.pop() } {
            // SAFETY: `old` is the previous stub, no longer in the list; `node` is live.
            unsafe {
                (vt(old).free)(old);
                let _ = catch(|| release_node(node));
            }
            popped += 1;
        }
        self.pump.taken.fetch_add(popped, Ordering::Relaxed);
        n += popped;
        for item in self.progress_rx.try_iter() {
            let _ = catch(|| item.release());
            n += 1;
        }
        n
    }
}

/// Releases a node's item (the node stays).
///
/// # Safety
///
/// `node` is live and the caller's.
unsafe fn release_node(node: *mut Link) {
    // SAFETY: as the caller promised.
    unsafe { (vt(node).release)(node) }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // What producers raced into the queue after shutdown swept it.
        // SAFETY: `&mut self`: nobody else touches the queue.
        unsafe {
            self.release_queued();
            let stub = self.list.stub();
            (vt(stub).free)(stub);
        }
    }
}

/// The default of [`Builder::main_backlog_limit`](crate::Builder::main_backlog_limit).
pub const DEFAULT_MAIN_BACKLOG_LIMIT: usize = 1 << 20;
/// The default of [`Builder::main_backlog_bytes`](crate::Builder::main_backlog_bytes).
pub const DEFAULT_MAIN_BACKLOG_BYTES: usize = 256 << 20;
/// A pump that finds at least this many items waiting drained a backlog worth handing its
/// memory back to the system once it is empty (see `trim`).
pub(crate) const TRIM_AFTER: usize = 1 << 16;

/// The bound on a runtime's main-thread backlog, and what it refused.
///
/// The policy, per path to the main thread:
/// - **refused at the limit** (`Error::Backlog` / `HL_STATUS_BACKLOG`, nothing queued, the
///   caller told): `post`, `post_chunked`, `call_on_main` from another thread, `post_event`
///   (a coalescing one only when it would add an entry), `emit` from another thread, and
///   `spawn` — a producer that can be told to wait;
/// - **never refused**, because the API already promised them: the continuations of jobs
///   already spawned, progress (coalesced: one entry per job), simulation frames (`latest`
///   keeps one, `every` blocks the simulation), stream items (bounded channels block their
///   senders), and hostloop's own deliveries (isolated plugins' messages, pool answers). The
///   backlog can pass the limit by what was already running when it was reached, no more.
pub(crate) struct Limits {
    pub(crate) items: AtomicUsize,
    pub(crate) bytes: AtomicUsize,
    /// Payload bytes of emitted messages waiting.
    pub(crate) queued_bytes: AtomicUsize,
    /// Calls refused at the limit.
    pub(crate) refused: AtomicU64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            items: AtomicUsize::new(DEFAULT_MAIN_BACKLOG_LIMIT),
            bytes: AtomicUsize::new(DEFAULT_MAIN_BACKLOG_BYTES),
            queued_bytes: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }
}

/// Payload bytes counted in [`Limits::queued_bytes`] while the item holding this is waiting.
pub(crate) struct QueuedBytes {
    shared: Arc<Shared>,
    len: usize,
}

impl Drop for QueuedBytes {
    fn drop(&mut self) {
        self.shared
            .main
            .limits
            .queued_bytes
            .fetch_sub(self.len, Ordering::Relaxed);
    }
}

impl MainQueue {
    /// Whether a producer that can be told no may queue one more item carrying `bytes` payload
    /// bytes: `Err(Backlog)` (counted) when the backlog is at its limit. The check and the push
    /// are not one atomic step, so concurrent producers may pass the limit by one item each.
    pub(crate) fn admit(&self, shared: &Shared, bytes: usize) -> Result<()> {
        if shared.is_shutting_down() {
            return Err(Error::ShutDown);
        }
        let l = &self.limits;
        let full = shared.backend.main_backlog(shared) >= l.items.load(Ordering::Relaxed)
            || (bytes > 0
                && l.queued_bytes.load(Ordering::Relaxed).saturating_add(bytes)
                    > l.bytes.load(Ordering::Relaxed));
        if full {
            l.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Backlog);
        }
        Ok(())
    }

    /// Counts `len` payload bytes as waiting until the returned guard is dropped (with the item
    /// that holds it: run, or released).
    pub(crate) fn hold_bytes(shared: &Arc<Shared>, len: usize) -> QueuedBytes {
        shared
            .main
            .limits
            .queued_bytes
            .fetch_add(len, Ordering::Relaxed);
        QueuedBytes {
            shared: shared.clone(),
            len,
        }
    }
}

/// Hands freed memory back to the system (glibc keeps what a drained backlog freed in its
/// arenas, so a host's resident size stayed at its peak after a stall).
pub(crate) fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's `malloc_trim` may be called at any time from any thread.
        unsafe { malloc_trim(0) };
    }
}

/// Queues main-thread work where this runtime's main-thread work runs.
pub(crate) fn post_task(shared: &Arc<Shared>, task: MainTask) -> Result<()> {
    post_item(shared, MainItem::Task(task))
}

/// Queues a job whose progress listener must run at the next pump (once per pump at most:
/// the job's slot holds at most one entry here at a time).
pub(crate) fn post_progress(shared: &Arc<Shared>, job: JobRef) -> Result<()> {
    post_item(shared, MainItem::Progress(job))
}

/// Queues `item` behind the progress entries already queued: it runs after them, at the start
/// of the next pump (a plugin's: in its host's queue, which is one FIFO). A job's result waits
/// there for its last progress report.
pub(crate) fn post_after_progress(shared: &Arc<Shared>, item: MainItem) -> Result<()> {
    if shared.is_shutting_down() {
        return Err(Error::ShutDown);
    }
    if shared.backend.local().is_some() {
        shared.main.push_side(item)
    } else {
        shared.backend.post_main(shared, item)
    }
}

fn post_item(shared: &Arc<Shared>, item: MainItem) -> Result<()> {
    if shared.is_shutting_down() {
        return Err(Error::ShutDown);
    }
    shared.backend.post_main(shared, item)
}

/// Queues `f` to run once on the main thread: on a local runtime in one allocation (the queue's
/// node holds the closure), through its host's services for a plugin's.
fn post_fn<F>(shared: &Arc<Shared>, f: F) -> Result<()>
where
    F: FnOnce(&mut Main<'_>) + Send + 'static,
{
    if shared.is_shutting_down() {
        return Err(Error::ShutDown);
    }
    if shared.backend.local().is_some() {
        shared.main.push_fn(f);
        Ok(())
    } else {
        shared
            .backend
            .post_main(shared, MainItem::Task(MainTask::Once(Box::new(f))))
    }
}

impl MainQueue {
    /// Runs items off the list until it is empty (then parks it), the budget is spent, or the
    /// runtime shuts down; counts what ran and what panicked.
    ///
    /// One `catch` covers a run of items rather than each item: a panic ends the run, the
    /// panicked item is dropped, and the loop goes on with the next one.
    ///
    /// # Safety
    ///
    /// The caller holds the consumer side (`in_pump`).
    unsafe fn drain(
        &self,
        handle: &Handle,
        deadline: &mut Deadline,
        ran: &mut usize,
        panicked: &mut u64,
    ) -> Drained {
        let at = deadline.at();
        let mut carrying = self.pump.carrying.load(Ordering::Relaxed);
        let mut taken = 0usize;
        let outcome = loop {
            let run = catch(|| loop {
                let node = if carrying {
                    // SAFETY: the stub holds the carried item; the consumer side is ours.
                    unsafe { self.list.stub() }
                } else {
                    // SAFETY: the consumer side is ours.
                    match unsafe { self.next(taken > 0) } {
                        Next::Node(node) => {
                            taken += 1;
                            node
                        }
                        Next::Parked => break Drained::Parked,
                        Next::Busy => break Drained::Left,
                    }
                };
                let mut main = Main::new(handle, at);
                // SAFETY: `node` is the live stub, ours.
                carrying = unsafe { (vt(node).run)(node, &mut main) } == Step::Continue;
                *ran += 1;
                // SAFETY: the consumer side is ours.
                if let Some(end) = unsafe { self.after_item(handle, deadline, carrying) } {
                    break end;
                }
            });
            match run {
                Ok(end) => break end,
                Err(_) => {
                    // The stub holds what panicked: drop what is left of it.
                    *panicked += 1;
                    *ran += 1;
                    carrying = false;
                    // SAFETY: the stub is live, ours.
                    let _ = catch(|| unsafe { release_node(self.list.stub()) });
                    // SAFETY: the consumer side is ours.
                    if let Some(end) = unsafe { self.after_item(handle, deadline, false) } {
                        break end;
                    }
                }
            }
        };
        self.pump.taken.fetch_add(taken, Ordering::Relaxed);
        self.pump.carrying.store(carrying, Ordering::Relaxed);
        if matches!(outcome, Drained::ShutDown) {
            // Everything left goes, the carried item first: a chunked item holding the runtime
            // (the event dispatcher does) kept in the list would keep it alive for good.
            // SAFETY: the consumer side is ours.
            unsafe { self.release_queued() };
        }
        outcome
    }

    /// After an item: whether the pump stops (shut down by the item, or budget spent), and how.
    ///
    /// # Safety
    ///
    /// The caller holds the consumer side.
    unsafe fn after_item(
        &self,
        handle: &Handle,
        deadline: &mut Deadline,
        carrying: bool,
    ) -> Option<Drained> {
        // If the item shut the runtime down (a host callback called `hl_runtime_shutdown` or
        // `_free`), nothing else may run: shutdown left what is queued to this pump.
        if handle.shared().is_shutting_down() {
            return Some(Drained::ShutDown);
        }
        if !deadline.passed() {
            return None;
        }
        // Budget spent: no item starts now, but an empty list still parks.
        if carrying {
            return Some(Drained::Left);
        }
        // SAFETY: the caller holds the consumer side.
        let empty = unsafe { self.list.peek() } == Peek::Empty;
        // SAFETY: as above.
        Some(if empty && unsafe { self.settle() } {
            Drained::Parked
        } else {
            Drained::Left
        })
    }

    /// The list's next item, taken (the old stub freed); or, found empty, parked. `streaming`:
    /// this pump has taken items already, so producers are likely mid-burst — it waits a
    /// moment for the next one before it parks.
    ///
    /// # Safety
    ///
    /// The caller holds the consumer side.
    unsafe fn next(&self, streaming: bool) -> Next {
        loop {
            // SAFETY: the caller holds the consumer side.
            if let Some((node, old)) = unsafe { self.list.pop() } {
                // SAFETY: `old` left the list: nobody else can reach it.
                unsafe { (vt(old).free)(old) };
                return Next::Node(node);
            }
            // SAFETY: (this and below) the caller holds the consumer side.
            match unsafe { self.list.peek() } {
                Peek::Ready => {}
                Peek::Empty => {
                    // A park makes the next post ring: an eventfd write, a system call on the
                    // producer's side. A producer streaming items is back within a few hundred
                    // ns; without this wait, one producer at 8M items/s rang 47,000 times per
                    // million items (the pump caught up between every few posts).
                    // SAFETY: as above.
                    if streaming && unsafe { self.wait_while(Peek::Empty, PARK_SPINS) } {
                        continue;
                    }
                    // SAFETY: as above.
                    if unsafe { self.settle() } {
                        return Next::Parked;
                    }
                    // Items arrived between the look and the park: take them.
                }
                Peek::Busy => {
                    // A producer is between its swap and its link, two instructions apart,
                    // unless it was preempted there: wait a little, then leave it to the next
                    // pump (the pump rings when it leaves work).
                    // SAFETY: as above.
                    if !unsafe { self.wait_while(Peek::Busy, BUSY_SPINS) } {
                        return Next::Busy;
                    }
                }
            }
        }
    }

    /// Spins while the front of the list is `state`, at most `spins` times; returns whether it
    /// changed.
    ///
    /// # Safety
    ///
    /// The caller holds the consumer side.
    unsafe fn wait_while(&self, state: Peek, spins: u32) -> bool {
        for _ in 0..spins {
            std::hint::spin_loop();
            // SAFETY: the caller holds the consumer side.
            if unsafe { self.list.peek() } != state {
                return true;
            }
        }
        false
    }

    /// The list was found empty: clears the fd (if a ring landed since the last clear), *then*
    /// parks. Returns `false` if items arrived meanwhile (see `internal/mainq.rs`).
    ///
    /// # Safety
    ///
    /// The caller holds the consumer side.
    unsafe fn settle(&self) -> bool {
        self.doorbell.acknowledge();
        // SAFETY: the caller holds the consumer side.
        unsafe { self.list.park() }
    }
}

/// What the list gave the pump.
enum Next {
    /// An item to run: the list's stub now.
    Node(*mut Link),
    /// It was empty, and is parked.
    Parked,
    /// A producer is between its two steps.
    Busy,
}

impl Handle {
    /// Runs queued main-thread work in FIFO order until the queue is empty or `budget` is spent,
    /// and reports what it did. Call it from the host's idle callback or when
    /// [`doorbell_fd`](Handle::doorbell_fd) is readable.
    ///
    /// At least one item runs per call, so `Duration::ZERO` runs exactly one item (in C,
    /// `hl_runtime_pump` with `budget_us == 0` means the options' `default_budget_us` instead,
    /// since C has no "no budget given"; a C host passes 1 µs to run one item). The deadline is
    /// checked after every item, so no item starts once the budget is spent: a pump takes at most
    /// its budget plus the item that was running when the budget ran out. (Checking only once
    /// per batch of cheap items let a pump that met slow items in a batch run them all, tens of
    /// milliseconds past a 1 ms budget. The check reads the CPU's time-stamp counter where it is
    /// invariant, a third of the cost of the clock, and the clock itself before it ends a pump
    /// and at least every 32 items: see `internal/clock.rs`.)
    ///
    /// The doorbell is cleared when the pump finds the queue empty (not when it starts), so
    /// posts that arrive while it drains ring nothing; a pump that leaves work behind rings it.
    /// Panics in items are caught and counted in [`Stats::main_items_panicked`](crate::Stats).
    ///
    /// # Errors
    ///
    /// [`Error::WrongThread`] off the main thread, [`Error::Reentrant`] from inside an item this
    /// pump runs or from the `until` condition of [`run_until`](Handle::run_until),
    /// [`Error::ShutDown`] after shutdown, [`Error::InvalidArgument`] inside a plugin
    /// (the host pumps).
    pub fn pump(&self, budget: Duration) -> Result<PumpReport> {
        let q = &self.shared().main;
        self.check_can_pump()?;
        if q.pump.in_until.load(Ordering::Acquire) || q.pump.in_pump.swap(true, Ordering::Acquire) {
            return Err(Error::Reentrant);
        }
        struct Reset<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _reset = Reset(&q.pump.in_pump);

        let stamp = Stamp::now();
        q.pump.clock.learn(stamp);
        let start = stamp.at;
        let deadline = start + budget;
        let mut ran = 0usize;
        let mut panicked = 0u64;
        if q.len() >= TRIM_AFTER {
            q.pump.trim_due.store(true, Ordering::Relaxed);
        }
        // Progress slots first, each at most once per pump: only those queued before this pump
        // started, so a job reporting non-stop cannot keep the pump busy.
        for item in q.progress_rx.try_iter().take(q.progress_rx.len()) {
            let mut main = Main::new(self, deadline);
            let run = catch(|| match item {
                MainItem::Progress(job) => job.deliver_progress(&mut main),
                // Run once: what waits for progress (a job's result) is never chunked.
                MainItem::Task(task) => drop(task.run(&mut main)),
            });
            if run.is_err() {
                panicked += 1;
            }
            ran += 1;
        }
        let mut check = q.pump.clock.deadline(stamp, deadline);
        // SAFETY: `in_pump` is ours: so is the consumer side of the list.
        let drained = unsafe { q.drain(self, &mut check, &mut ran, &mut panicked) };
        let end = Stamp::now();
        q.pump.clock.learn(end);
        let now = end.at;
        let remaining = match drained {
            Drained::Parked => {
                // Progress that came during the pump waits for the next one: say so.
                if !q.progress_rx.is_empty() && q.list.unpark() {
                    q.doorbell.ring();
                }
                q.backlog(self.shared(), false)
            }
            Drained::Left => {
                // Budget spent with work left: ring, so the host comes back.
                q.doorbell.ring();
                q.backlog(self.shared(), q.is_carrying()).max(1)
            }
            Drained::ShutDown => 0,
        };
        if remaining == 0 && q.pump.trim_due.load(Ordering::Relaxed) {
            q.pump.trim_due.store(false, Ordering::Relaxed);
            // A large backlog is drained: give its memory back, off the main thread.
            self.shared().submit_internal(crate::job::Lane::Io, trim);
        }
        let elapsed = now - start;
        let overrun = elapsed.saturating_sub(budget);
        self.shared()
            .stats
            .record_pump(elapsed, overrun, ran as u64, panicked);
        Ok(PumpReport {
            ran,
            remaining,
            elapsed,
            overrun,
        })
    }

    /// Why this thread may not pump now, if it may not: a plugin, another thread, shut down.
    fn check_can_pump(&self) -> Result<()> {
        let shared = self.shared();
        shared.backend.check_can_pump()?;
        if !self.is_main_thread() {
            return Err(Error::WrongThread);
        }
        if shared.is_shutting_down() {
            return Err(Error::ShutDown);
        }
        Ok(())
    }

    /// Drives the pump itself, for hosts with no running event loop (`blender -b`, `hython`,
    /// `mayapy`, a render-farm job): on the calling (main) thread, pumps with `budget`, sleeps
    /// on the doorbell until more main-thread work arrives, and repeats until `until` returns
    /// `true` or `timeout` passes. `until` runs on the main thread before the first pump and
    /// after each one; it is re-checked at least every 50 ms even when nothing arrives. It may
    /// do anything main-thread code may, except pump: `pump` and `run_until` called from
    /// inside it return [`Error::Reentrant`].
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let rt = hostloop::Runtime::builder().workers(1).build()?;
    /// let answer = Arc::new(AtomicU64::new(0));
    /// let slot = answer.clone();
    /// let _job = rt
    ///     .spawn(|_| Ok(6 * 7))?
    ///     .on_main(move |r, _main| slot.store(r.unwrap_or(0), Ordering::Relaxed));
    /// let budget = Duration::from_millis(2);
    /// let report = rt.run_until(|| answer.load(Ordering::Relaxed) != 0, budget, Duration::from_secs(60))?;
    /// assert!(report.finished);
    /// assert_eq!(answer.load(Ordering::Relaxed), 42);
    /// # Ok::<(), hostloop::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Handle::pump`]: [`Error::WrongThread`], [`Error::Reentrant`] (from inside a pumped
    /// item or another `run_until`'s `until`), [`Error::ShutDown`], [`Error::InvalidArgument`]
    /// inside a plugin; [`Error::Panicked`] if `until` panicked. A timeout is not an error: the
    /// report says `finished: false`.
    pub fn run_until<F>(
        &self,
        mut until: F,
        budget: Duration,
        timeout: Duration,
    ) -> Result<RunReport>
    where
        F: FnMut() -> bool,
    {
        /// The longest sleep between two checks of `until`.
        const SLICE: Duration = Duration::from_millis(50);
        self.check_can_pump()?;
        let pump = &self.shared().main.pump;
        if pump.in_pump.load(Ordering::Acquire) || pump.in_until.load(Ordering::Acquire) {
            return Err(Error::Reentrant);
        }
        let start = Instant::now();
        let mut report = RunReport::default();
        let finish = |mut report: RunReport, finished: bool| {
            report.finished = finished;
            report.elapsed = start.elapsed();
            Ok(report)
        };
        // `until` is asked with `in_until` raised, so that a `pump` or `run_until` inside it is
        // `Reentrant` (as documented) rather than a nested loop the report would not count.
        let mut until = || {
            pump.in_until.store(true, Ordering::Release);
            let r = catch(&mut until);
            pump.in_until.store(false, Ordering::Release);
            r.map_err(Error::from_panic)
        };
        if until()? {
            return finish(report, true);
        }
        loop {
            let pumped = self.pump(budget)?;
            report.pumps += 1;
            report.ran += pumped.ran as u64;
            if until()? {
                return finish(report, true);
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return finish(report, false);
            }
            if pumped.remaining == 0 {
                self.shared().main.doorbell.wait(left.min(SLICE));
            }
        }
    }

    /// Queues `f` to run once on the main thread, at a later pump.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] after shutdown; [`Error::Backlog`] while the host has not pumped and
    /// the backlog is at its limit (nothing was queued).
    pub fn post<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&mut Main<'_>) + Send + 'static,
    {
        let shared = self.shared();
        shared.main.admit(shared, 0)?;
        post_fn(shared, f)
    }

    /// `post` for hostloop's own deliveries, which the API promised: never refused for the
    /// backlog (see [`Limits`]).
    pub(crate) fn post_promised<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&mut Main<'_>) + Send + 'static,
    {
        post_fn(self.shared(), f)
    }

    /// Queues chunked main-thread work: `f` is called, at later pumps, until it returns
    /// [`Step::Done`]. Use it for main-thread work too big for one frame (applying 1M results to
    /// a scene); size each slice with [`Main::time_left`].
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] after shutdown; [`Error::Backlog`] at the backlog limit, as for `post`.
    pub fn post_chunked<F>(&self, f: F) -> Result<()>
    where
        F: FnMut(&mut Main<'_>) -> Step + Send + 'static,
    {
        let shared = self.shared();
        shared.main.admit(shared, 0)?;
        post_task(shared, MainTask::Chunked(Box::new(f)))
    }

    /// Runs `f` on the main thread and returns its result, waiting at most the runtime's
    /// default timeout (see [`Builder::call_on_main_timeout`](crate::Builder::call_on_main_timeout)).
    ///
    /// See [`Handle::call_on_main_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Handle::call_on_main_timeout`].
    pub fn call_on_main<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Main<'_>) -> R + Send + 'static,
    {
        self.call_on_main_timeout(self.shared().call_timeout, f)
    }

    /// Runs `f` on the main thread and returns its result.
    ///
    /// On the main thread `f` runs inline, at once. From any other thread the call is queued and
    /// waits until a pump runs it, or `timeout` passes — then it returns [`Error::HostBusy`] and
    /// `f` is guaranteed never to run. It never deadlocks: a host that does not pump costs the
    /// caller `timeout`, no more (once `f` has started, the caller waits for it to finish).
    ///
    /// # Errors
    ///
    /// [`Error::HostBusy`] if the host did not pump in time, [`Error::Panicked`] if `f`
    /// panicked, [`Error::ShutDown`] if the runtime shut down first.
    pub fn call_on_main_timeout<R, F>(&self, timeout: Duration, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Main<'_>) -> R + Send + 'static,
    {
        if self.is_main_thread() {
            let mut main = Main::new(self, Instant::now());
            return catch(|| f(&mut main)).map_err(Error::from_panic);
        }
        const PENDING: u8 = 0;
        const STARTED: u8 = 1;
        const ABANDONED: u8 = 2;
        let state = Arc::new(AtomicU8::new(PENDING));
        let (tx, rx) = crossbeam_channel::bounded(1);
        let task_state = state.clone();
        self.post(move |main| {
            if task_state
                .compare_exchange(PENDING, STARTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let r = catch(|| f(main)).map_err(Error::from_panic);
                let _ = tx.send(r);
            }
        })?;
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(Error::ShutDown),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if state
                    .compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    Err(Error::HostBusy)
                } else {
                    // `f` is running on the main thread right now: its result is moments away.
                    rx.recv().unwrap_or(Err(Error::ShutDown))
                }
            }
        }
    }
}
