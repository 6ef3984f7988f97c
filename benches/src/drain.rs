//! Benchmark 1: main-thread drain throughput.
//!
//! Producer threads queue `items` boxed closures, each incrementing a counter, while the main
//! thread drains and runs them. Timed from the start of production (all producers are released
//! together by a barrier) to the moment the last item has run on the main thread.
//!
//! Every contender drains the same way: run whatever is queued, and yield the CPU when nothing
//! was, until every item has run.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use hostloop::{Handle, Runtime};

use crate::report::{Row, Samples, Target, Unit};

/// The budget the hostloop contender passes to each `pump`.
const PUMP_BUDGET: Duration = Duration::from_millis(2);

/// Items run in the current measurement. Only the main thread writes it.
static RAN: AtomicUsize = AtomicUsize::new(0);

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
    Crossbeam,
    Mutex,
    Mpsc,
}

impl Contender {
    pub const ALL: [Contender; 4] = [
        Contender::Hostloop,
        Contender::Crossbeam,
        Contender::Mutex,
        Contender::Mpsc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contender::Hostloop => "hostloop",
            Contender::Crossbeam => "crossbeam unbounded",
            Contender::Mutex => "Mutex<VecDeque> swap",
            Contender::Mpsc => "std mpsc",
        }
    }

    /// hostloop's target against this peer.
    fn target(self, producers: usize) -> Target {
        match self {
            Contender::Hostloop | Contender::Mpsc => Target::None,
            Contender::Crossbeam => Target::RatioAtLeast(0.8),
            Contender::Mutex if producers == 1 => Target::RatioAtLeast(1.0),
            // With contended producers, hostloop must pull ahead of the lock.
            Contender::Mutex => Target::RatioAbove(1.0),
        }
    }

    /// One measurement on a fresh queue (hostloop's is the runtime's own); items/s.
    pub fn run(self, rt: &Runtime, items: usize, producers: usize) -> f64 {
        match self {
            Contender::Hostloop => measure(Hostloop(rt), items, producers),
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
const PRODUCERS: [usize; 2] = [1, 2];

/// The drain benchmark's configuration and samples.
#[derive(Debug)]
pub struct Bench {
    items: usize,
    /// `rates[p][c]`: items/s with `PRODUCERS[p]` producers, contender `Contender::ALL[c]`.
    rates: [[Samples; 4]; 2],
    /// `rings[p]`: doorbell rings during each hostloop run with `PRODUCERS[p]` producers.
    rings: [Samples; 2],
}

impl Bench {
    pub fn new(items: usize) -> Self {
        Bench {
            items,
            rates: Default::default(),
            rings: Default::default(),
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
                self.rates[p][c].push(contender.run(rt, self.items, producers));
                if contender == Contender::Hostloop {
                    let rings = rt.stats().doorbell_rings - rings_before;
                    self.rings[p].push(rings as f64);
                }
            }
        }
    }

    /// hostloop's items/s with one producer, per round.
    pub fn hostloop_1p(&self) -> &Samples {
        &self.rates[0][0]
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
                    peer.target(producers),
                ));
            }
        }
        rows
    }

    /// Context for the drain rows: how often the tight pump loop rang the doorbell.
    pub fn notes(&self) -> Vec<String> {
        PRODUCERS
            .iter()
            .zip(&self.rings)
            .map(|(producers, rings)| {
                format!(
                    "drain {producers}P: the doorbell rang {:.0} times per {} items (median): \
                     how often the pump loop caught up with the producers",
                    rings.median(),
                    self.items
                )
            })
            .collect()
    }
}
