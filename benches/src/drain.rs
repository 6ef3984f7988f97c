//! Benchmark 1: main-thread drain throughput.
//!
//! Producer threads (1, 2, 4 and 8 of them) queue `items` boxed closures, each incrementing a
//! counter, while the main thread drains and runs them. Timed from the start of production (all
//! producers are released together by a barrier) to the moment the last item has run on the main
//! thread.
//!
//! Every contender drains the same way: run whatever is queued, and yield the CPU when nothing
//! was, until every item has run. The five contenders:
//!
//! * **hostloop**: producers `Handle::post`, the main thread `Runtime::pump`s. hostloop pays for
//!   waking the host: the producer that finds the queue parked rings the doorbell fd, and the
//!   pump parks the queue (and acknowledges the doorbell) when it finds it empty.
//! * **crossbeam + coalesced eventfd**, the *fair peer*: what a host integrator would otherwise
//!   write. A crossbeam unbounded channel plus a non-blocking Linux eventfd and a "rung" flag: a
//!   producer sends, then writes the eventfd only if it is the one that set the flag; the drain
//!   acknowledges first (reads the eventfd and clears the flag if it was set), then drains with
//!   `try_recv`. It wakes the host exactly as hostloop must. Target: hostloop ≥ 1.0× it.
//! * **crossbeam unbounded**, drained with `try_recv`: a limit, since it never wakes anyone.
//!   Target: hostloop ≥ 0.9× it.
//! * **`Mutex<VecDeque>` swap**, what Unity and Blender add-ons do: a limit, never wakes anyone.
//!   Target: hostloop ≥ 1.0× it.
//! * **std mpsc**, drained with `try_recv`: a limit, never wakes anyone. No target; context.
//!
//! The targets are the same for every producer count. The notes report how often hostloop's
//! doorbell and the fair peer's eventfd were rung per run.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use hostloop::{Handle, Runtime};
use rustix::event::{eventfd, EventfdFlags};
use rustix::io::Errno;

use crate::report::{Row, Samples, Target, Unit};

/// The budget the hostloop contender passes to each `pump`.
const PUMP_BUDGET: Duration = Duration::from_millis(2);

/// Items run in the current measurement. Only the main thread writes it.
static RAN: AtomicUsize = AtomicUsize::new(0);

/// Eventfd writes by the fair peer's producers in the current measurement.
static FAIR_RINGS: AtomicUsize = AtomicUsize::new(0);

/// A main-thread item as the peers queue it.
type Item = Box<dyn FnOnce() + Send>;

/// The producer side of a main-thread queue.
trait Producer: Send {
    fn send(&self, item: impl FnOnce() + Send + 'static);
}

/// A queue whose items run on the main thread.
trait MainQueue {
    type Producer: Producer;

    fn producer(&self) -> Self::Producer;

    /// Runs the items queued now, on the calling (main) thread; returns how many ran.
    fn drain(&mut self) -> usize;
}

/// hostloop: producers `post`, the main thread `pump`s.
struct Hostloop<'a>(&'a Runtime);

impl Producer for Handle {
    fn send(&self, item: impl FnOnce() + Send + 'static) {
        self.post(move |_main| item())
            .expect("the runtime is running");
    }
}

impl MainQueue for Hostloop<'_> {
    type Producer = Handle;

    fn producer(&self) -> Handle {
        self.0.handle().clone()
    }

    fn drain(&mut self) -> usize {
        self.0
            .pump(PUMP_BUDGET)
            .expect("the bench pumps on the main thread")
            .ran
    }
}

/// The limit: a raw crossbeam unbounded channel, drained with `try_recv`.
struct Crossbeam {
    tx: crossbeam_channel::Sender<Item>,
    rx: crossbeam_channel::Receiver<Item>,
}

impl Producer for crossbeam_channel::Sender<Item> {
    fn send(&self, item: impl FnOnce() + Send + 'static) {
        crossbeam_channel::Sender::send(self, Box::new(item)).expect("the receiver is alive");
    }
}

impl MainQueue for Crossbeam {
    type Producer = crossbeam_channel::Sender<Item>;

    fn producer(&self) -> Self::Producer {
        self.tx.clone()
    }

    fn drain(&mut self) -> usize {
        self.rx.try_iter().map(|item| item()).count()
    }
}

/// The fair peer's wake-up: a non-blocking eventfd and the flag that coalesces its writes.
#[derive(Debug)]
struct Bell {
    fd: OwnedFd,
    /// Set by the producer that writes the eventfd, cleared by the drain that acknowledges it.
    rung: AtomicBool,
}

/// The fair peer: a crossbeam unbounded channel that wakes the host through a coalesced eventfd,
/// as a host integrator would write it without hostloop.
struct CoalescedEventfd {
    tx: crossbeam_channel::Sender<Item>,
    rx: crossbeam_channel::Receiver<Item>,
    bell: Arc<Bell>,
}

/// The fair peer's producer side.
struct CoalescedProducer {
    tx: crossbeam_channel::Sender<Item>,
    bell: Arc<Bell>,
}

impl Producer for CoalescedProducer {
    fn send(&self, item: impl FnOnce() + Send + 'static) {
        crossbeam_channel::Sender::send(&self.tx, Box::new(item)).expect("the receiver is alive");
        // Only the producer that sets the flag writes: one write per acknowledgement.
        if !self.bell.rung.swap(true, Ordering::AcqRel) {
            rustix::io::write(&self.bell.fd, &1u64.to_ne_bytes()).expect("the eventfd is writable");
            FAIR_RINGS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl CoalescedEventfd {
    fn new() -> Self {
        let fd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
            .expect("the bench can create an eventfd");
        let (tx, rx) = crossbeam_channel::unbounded();
        CoalescedEventfd {
            tx,
            rx,
            bell: Arc::new(Bell {
                fd,
                rung: AtomicBool::new(false),
            }),
        }
    }
}

impl MainQueue for CoalescedEventfd {
    type Producer = CoalescedProducer;

    fn producer(&self) -> Self::Producer {
        CoalescedProducer {
            tx: self.tx.clone(),
            bell: self.bell.clone(),
        }
    }

    fn drain(&mut self) -> usize {
        // Acknowledge first, then drain: an item sent after the drain finds the flag clear and
        // rings again, so none is left behind without a wake-up.
        if self.bell.rung.load(Ordering::Acquire) {
            match rustix::io::read(&self.bell.fd, &mut [0u8; 8]) {
                // EAGAIN: the flag is set but its producer has not written yet.
                Ok(_) | Err(Errno::AGAIN) => {}
                Err(e) => panic!("reading the eventfd failed: {e}"),
            }
            // A swap, not a store, so that it acquires the items sent before the flag was set.
            self.bell.rung.swap(false, Ordering::AcqRel);
        }
        self.rx.try_iter().map(|item| item()).count()
    }
}

/// What Unity and Blender add-ons do: a locked `VecDeque` that the main thread swaps out whole
/// and runs outside the lock (keeping the spare buffer's capacity).
struct MutexDispatcher {
    queue: Arc<Mutex<VecDeque<Item>>>,
    spare: VecDeque<Item>,
}

impl Producer for Arc<Mutex<VecDeque<Item>>> {
    fn send(&self, item: impl FnOnce() + Send + 'static) {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Box::new(item));
    }
}

impl MainQueue for MutexDispatcher {
    type Producer = Arc<Mutex<VecDeque<Item>>>;

    fn producer(&self) -> Self::Producer {
        self.queue.clone()
    }

    fn drain(&mut self) -> usize {
        std::mem::swap(
            &mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner),
            &mut self.spare,
        );
        self.spare.drain(..).map(|item| item()).count()
    }
}

/// `std::sync::mpsc::channel`, drained with `try_recv`.
struct StdMpsc {
    tx: mpsc::Sender<Item>,
    rx: mpsc::Receiver<Item>,
}

impl Producer for mpsc::Sender<Item> {
    fn send(&self, item: impl FnOnce() + Send + 'static) {
        mpsc::Sender::send(self, Box::new(item)).expect("the receiver is alive");
    }
}

impl MainQueue for StdMpsc {
    type Producer = mpsc::Sender<Item>;

    fn producer(&self) -> Self::Producer {
        self.tx.clone()
    }

    fn drain(&mut self) -> usize {
        self.rx.try_iter().map(|item| item()).count()
    }
}

/// Runs one measurement; returns items per second.
fn measure(mut queue: impl MainQueue, items: usize, producers: usize) -> f64 {
    RAN.store(0, Ordering::Relaxed);
    let start_line = Barrier::new(producers + 1);
    thread::scope(|s| {
        for p in 0..producers {
            // Split `items` as evenly as possible.
            let share = items / producers + usize::from(p < items % producers);
            let tx = queue.producer();
            let start_line = &start_line;
            s.spawn(move || {
                // Capturing a pointer makes each item a real heap allocation, as a real item
                // carrying its data would be (a capture-less closure boxes without allocating).
                let ran: &'static AtomicUsize = &RAN;
                start_line.wait();
                for _ in 0..share {
                    tx.send(move || {
                        ran.fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
        }
        start_line.wait();
        let start = Instant::now();
        while RAN.load(Ordering::Relaxed) < items {
            if queue.drain() == 0 {
                thread::yield_now();
            }
        }
        items as f64 / start.elapsed().as_secs_f64()
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    Hostloop,
    /// The fair peer: crossbeam plus a coalesced eventfd.
    Coalesced,
    Crossbeam,
    Mutex,
    Mpsc,
}

impl Contender {
    pub const ALL: [Contender; 5] = [
        Contender::Hostloop,
        Contender::Coalesced,
        Contender::Crossbeam,
        Contender::Mutex,
        Contender::Mpsc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contender::Hostloop => "hostloop",
            Contender::Coalesced => "crossbeam + coalesced eventfd",
            Contender::Crossbeam => "crossbeam unbounded",
            Contender::Mutex => "Mutex<VecDeque> swap",
            Contender::Mpsc => "std mpsc",
        }
    }

    /// hostloop's target against this peer (the same in every producer count and placement).
    pub fn target(self) -> Target {
        match self {
            Contender::Hostloop | Contender::Mpsc => Target::None,
            // The fair peer wakes the host as hostloop does: hostloop must at least match it.
            Contender::Coalesced => Target::RatioAtLeast(1.0),
            // The limits never wake anyone.
            Contender::Crossbeam => Target::RatioAtLeast(0.9),
            Contender::Mutex => Target::RatioAtLeast(1.0),
        }
    }

    /// One measurement on a fresh queue (hostloop's is the runtime's own); items/s.
    pub fn run(self, rt: &Runtime, items: usize, producers: usize) -> f64 {
        match self {
            Contender::Hostloop => measure(Hostloop(rt), items, producers),
            Contender::Coalesced => measure(CoalescedEventfd::new(), items, producers),
            Contender::Crossbeam => {
                let (tx, rx) = crossbeam_channel::unbounded();
                measure(Crossbeam { tx, rx }, items, producers)
            }
            Contender::Mutex => {
                let dispatcher = MutexDispatcher {
                    queue: Arc::default(),
                    spare: VecDeque::new(),
                };
                measure(dispatcher, items, producers)
            }
            Contender::Mpsc => {
                let (tx, rx) = mpsc::channel();
                measure(StdMpsc { tx, rx }, items, producers)
            }
        }
    }
}

/// Producer-thread counts measured.
const PRODUCERS: [usize; 4] = [1, 2, 4, 8];

/// The drain benchmark's configuration and samples.
#[derive(Debug)]
pub struct Bench {
    items: usize,
    /// `rates[p][c]`: items/s with `PRODUCERS[p]` producers, contender `Contender::ALL[c]`.
    rates: [[Samples; Contender::ALL.len()]; PRODUCERS.len()],
    /// `rings[p]`: doorbell rings during each hostloop run with `PRODUCERS[p]` producers.
    rings: [Samples; PRODUCERS.len()],
    /// `fair_rings[p]`: eventfd writes during each fair-peer run with `PRODUCERS[p]` producers.
    fair_rings: [Samples; PRODUCERS.len()],
}

impl Bench {
    pub fn new(items: usize) -> Self {
        Bench {
            items,
            rates: Default::default(),
            rings: Default::default(),
            fair_rings: Default::default(),
        }
    }

    /// Measures every contender once per producer count, in forward or reversed order.
    pub fn round(&mut self, rt: &Runtime, reversed: bool) {
        for (p, &producers) in PRODUCERS.iter().enumerate() {
            let mut order: Vec<usize> = (0..Contender::ALL.len()).collect();
            if reversed {
                order.reverse();
            }
            for c in order {
                let contender = Contender::ALL[c];
                let rings_before = rt.stats().doorbell_rings;
                FAIR_RINGS.store(0, Ordering::Relaxed);
                self.rates[p][c].push(contender.run(rt, self.items, producers));
                match contender {
                    Contender::Hostloop => {
                        let rings = rt.stats().doorbell_rings - rings_before;
                        self.rings[p].push(rings as f64);
                    }
                    Contender::Coalesced => {
                        let rings = FAIR_RINGS.load(Ordering::Relaxed);
                        self.fair_rings[p].push(rings as f64);
                    }
                    _ => {}
                }
            }
        }
    }

    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (p, &producers) in PRODUCERS.iter().enumerate() {
            let rates = &self.rates[p];
            for (c, peer) in Contender::ALL.into_iter().enumerate().skip(1) {
                rows.push(Row::versus(
                    format!("drain {producers}P vs {}", peer.name()),
                    Unit::Rate,
                    &rates[0],
                    &rates[c],
                    peer.target(),
                ));
            }
        }
        rows
    }

    /// Context for the drain rows: how often the tight pump loop rang the doorbell (and, for
    /// comparison, how often the fair peer's producers wrote its eventfd).
    pub fn notes(&self) -> Vec<String> {
        PRODUCERS
            .iter()
            .zip(self.rings.iter().zip(&self.fair_rings))
            .map(|(producers, (rings, fair_rings))| {
                format!(
                    "drain {producers}P: the doorbell rang {:.0} times per {} items (median): \
                     how often the pump loop caught up with the producers (the fair peer's \
                     eventfd: {:.0} writes)",
                    rings.median(),
                    self.items,
                    fair_rings.median()
                )
            })
            .collect()
    }
}
