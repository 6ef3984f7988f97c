//! What a plugin that runs a simulation needs besides the simulation: settings a host can send
//! as text, and a slot that swaps the running simulation for a rebuilt one without letting the
//! old one's frames through.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::event::Event;
use crate::main_thread::Main;
use crate::runtime::Handle;
use crate::sim::{Delivery, FrameInfo, SimControl, SimOptions, Simulation};
use crate::sink::Payload;
use crate::snapshot::{SnapshotReader, SnapshotWriter};

/// Frames that may wait for the host in *every* delivery before the simulation waits.
const EVERY_CAPACITY: usize = 4;

/// The `key=value` pairs of a host's settings text (`"agents=1000 delivery=every"`), split on
/// white space.
///
/// # Errors
///
/// Each item is an error for a word that is not `key=value`.
pub fn settings_pairs(
    text: &str,
) -> impl Iterator<Item = std::result::Result<(&str, &str), String>> {
    text.split_whitespace().map(|pair| {
        pair.split_once('=')
            .ok_or_else(|| format!("`{pair}` is not key=value"))
    })
}

/// How a simulation runs, as a host sets it with text: `delivery=latest|every`, `rate=R`
/// (steps per second, 0 = unlimited), `playing=0|1`, `lockstep=0|1`. A plugin keeps one beside
/// its own settings and hands it the keys it does not know ([`SimSettings::apply`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SimSettings {
    /// `true`: every frame in order (the simulation waits for the host); `false`: the latest.
    pub every: bool,
    /// Steps per second; 0 = unlimited.
    pub rate: f64,
    /// Whether it plays.
    pub playing: bool,
    /// Whether it follows the host's frame-changed events.
    pub lockstep: bool,
}

impl Default for SimSettings {
    /// Latest delivery, unlimited, playing, not lock-stepped.
    fn default() -> Self {
        SimSettings {
            every: false,
            rate: 0.0,
            playing: true,
            lockstep: false,
        }
    }
}

impl SimSettings {
    /// Applies `key=value` if `key` is one of these settings; `None` for any other key.
    ///
    /// # Errors
    ///
    /// `Some(Err(..))` for a bad value, described.
    pub fn apply(&mut self, key: &str, value: &str) -> Option<std::result::Result<(), String>> {
        let flag = match value {
            "0" | "false" => Some(false),
            "1" | "true" => Some(true),
            _ => None,
        };
        let ok = match key {
            "delivery" => match value {
                "latest" | "every" => {
                    self.every = value == "every";
                    true
                }
                _ => false,
            },
            "rate" => match value.parse::<f64>() {
                Ok(r) if r >= 0.0 && r.is_finite() => {
                    self.rate = r;
                    true
                }
                _ => false,
            },
            "playing" => flag.map(|f| self.playing = f).is_some(),
            "lockstep" => flag.map(|f| self.lockstep = f).is_some(),
            _ => return None,
        };
        Some(if ok {
            Ok(())
        } else {
            Err(format!("bad value for {key}: `{value}`"))
        })
    }

    /// The options for [`Handle::simulate`] (a thread named `name`).
    pub fn options(&self, name: &str) -> SimOptions {
        SimOptions {
            name: name.to_owned(),
            delivery: if self.every {
                Delivery::Every {
                    capacity: EVERY_CAPACITY,
                }
            } else {
                Delivery::Latest
            },
            rate: (self.rate > 0.0).then_some(self.rate),
            playing: self.playing,
            lockstep: self.lockstep,
            resume: None,
        }
    }
}

impl fmt::Display for SimSettings {
    /// The text [`SimSettings::apply`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delivery={} rate={} playing={} lockstep={}",
            if self.every { "every" } else { "latest" },
            self.rate,
            u8::from(self.playing),
            u8::from(self.lockstep)
        )
    }
}

/// A plugin's running simulation, under a topic prefix: rebuilt on a new configuration (the
/// old one stops, and its frames still waiting for a pump are dropped, never shown after the
/// new one's), its failed steps reported on `<topic>/error`, its state kept across a hot reload
/// with its settings text.
pub struct SimSlot {
    topic: String,
    running: Option<(SimControl, Arc<AtomicBool>)>,
}

impl fmt::Debug for SimSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSlot")
            .field("topic", &self.topic)
            .field("running", &self.running.as_ref().map(|(c, _)| c))
            .finish()
    }
}

/// How long saving and resuming may wait for the simulation to reach a step boundary.
const STATE_TIMEOUT: Duration = Duration::from_secs(5);

impl SimSlot {
    /// An empty slot whose messages go to `<topic>/step`, `<topic>/error`.
    pub fn new(topic: impl Into<String>) -> Self {
        SimSlot {
            topic: topic.into(),
            running: None,
        }
    }

    /// Starts `sim` in place of the running simulation. Each frame reaches the host as
    /// `<topic>/step` (the step, u64 little-endian) followed by what `emit` sends.
    ///
    /// # Errors
    ///
    /// As [`Handle::simulate`]; the running simulation is then left as it was.
    pub fn start<S, F>(
        &mut self,
        rt: &Handle,
        sim: S,
        options: SimOptions,
        mut emit: F,
    ) -> Result<()>
    where
        S: Simulation,
        F: FnMut(&S::Frame, &mut Main<'_>) + Send + 'static,
    {
        let live = Arc::new(AtomicBool::new(true));
        let (frames_live, errors_live) = (live.clone(), live.clone());
        let step_topic = format!("{}/step", self.topic);
        let error_topic = format!("{}/error", self.topic);
        let sim = rt.simulate(sim, options, move |frame, info: FrameInfo, main| {
            // A frame of a replaced simulation may still be waiting for this pump.
            if frames_live.load(Ordering::Acquire) {
                let _ = main.emit(&step_topic, Payload::Bytes(&info.step.to_le_bytes()));
                emit(frame, main);
            }
        })?;
        sim.on_error(move |message, main| {
            if errors_live.load(Ordering::Acquire) {
                let _ = main.emit(&error_topic, Payload::Bytes(message.as_bytes()));
            }
        });
        self.stop();
        self.running = Some((sim, live));
        Ok(())
    }

    /// The running simulation's controls.
    pub fn control(&self) -> Option<&SimControl> {
        self.running.as_ref().map(|(c, _)| c)
    }

    /// Sends `message` to the host on `<topic>/error`.
    pub fn report(&self, main: &mut Main<'_>, message: &str) {
        let _ = main.emit(
            &format!("{}/error", self.topic),
            Payload::Bytes(message.as_bytes()),
        );
    }

    /// Plays or pauses on the host's playback events, and records it in `settings`; returns
    /// whether `event` was one of them.
    pub fn follow_playback(&self, event: &Event, settings: &mut SimSettings) -> bool {
        let playing = match event {
            Event::PlaybackStarted => true,
            Event::PlaybackStopped => false,
            _ => return false,
        };
        settings.playing = playing;
        if let Some(c) = self.control() {
            if playing {
                c.play();
            } else {
                c.pause();
            }
        }
        true
    }

    /// For [`Plugin::save_state`](super::Plugin::save_state): writes `settings` (the plugin's
    /// whole configuration as text) and a snapshot of the running simulation, which pauses.
    ///
    /// # Errors
    ///
    /// As [`SimControl::save_into`]; [`Error::ShutDown`](crate::Error::ShutDown) with no
    /// simulation running.
    pub fn save(&self, settings: &str, out: &mut SnapshotWriter) -> Result<()> {
        let c = self.control().ok_or(crate::Error::ShutDown)?;
        out.str(settings);
        c.save_into(out, STATE_TIMEOUT)
    }

    /// For [`Plugin::restore_state`](super::Plugin::restore_state): reads what
    /// [`SimSlot::save`] wrote — the settings text, which `configure` turns into the
    /// simulation and its options (called once), and the snapshot it then resumes from.
    ///
    /// # Errors
    ///
    /// A damaged record, `configure`'s error, or as [`SimSlot::start`].
    pub fn restore<S, F, C>(
        &mut self,
        rt: &Handle,
        input: &mut SnapshotReader<'_>,
        configure: C,
        emit: F,
    ) -> Result<()>
    where
        S: Simulation,
        F: FnMut(&S::Frame, &mut Main<'_>) + Send + 'static,
        C: FnOnce(&str) -> Result<(S, SimOptions)>,
    {
        let text = input.str().map_err(crate::Error::failed)?;
        let (sim, mut options) = configure(text)?;
        options.resume = Some(input.bytes().map_err(crate::Error::failed)?.to_vec());
        self.start(rt, sim, options, emit)
    }

    /// Stops the running simulation; its undelivered frames are dropped.
    pub fn stop(&mut self) {
        if let Some((c, live)) = self.running.take() {
            live.store(false, Ordering::Release);
            c.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_back_what_they_print_and_refuse_bad_values() {
        let mut s = SimSettings::default();
        for pair in settings_pairs("delivery=every rate=30 playing=0 lockstep=1") {
            let (k, v) = pair.unwrap();
            s.apply(k, v).unwrap().unwrap();
        }
        let mut back = SimSettings::default();
        for pair in settings_pairs(&s.to_string()) {
            let (k, v) = pair.unwrap();
            back.apply(k, v).unwrap().unwrap();
        }
        assert_eq!(back, s);
        let o = s.options("sim");
        assert_eq!((o.rate, o.playing, o.lockstep), (Some(30.0), false, true));
        assert!(matches!(o.delivery, Delivery::Every { .. }));
        assert!(s.apply("colour", "blue").is_none());
        for (k, v) in [
            ("rate", "-1"),
            ("rate", "inf"),
            ("playing", "yes"),
            ("delivery", "all"),
        ] {
            assert!(s.apply(k, v).unwrap().is_err(), "{k}={v}");
        }
        assert!(settings_pairs("agents").next().unwrap().is_err());
    }
}
