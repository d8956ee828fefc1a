//! The input thread: terminal events and ticks, in one channel, so the UI thread sleeps until
//! either arrives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the UI loop receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A key, mouse or resize event from the terminal.
    Input(crossterm::event::Event),
    /// `tick_rate` passed: time to look for new data.
    Tick,
    /// Reading the terminal failed; the loop ends with this message.
    Failed(String),
}

/// The input thread and its channel. Dropping it stops the thread within one tick.
pub struct EventSource {
    rx: Receiver<Event>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EventSource {
    /// Starts reading the terminal, with a [`Event::Tick`] every `tick_rate` even while keys
    /// keep arriving.
    pub fn spawn(tick_rate: Duration) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("lockscope-input".into())
            .spawn({
                let stop = stop.clone();
                move || read_loop(tx, stop, tick_rate)
            })?;
        Ok(EventSource {
            rx,
            stop,
            thread: Some(thread),
        })
    }

    pub fn receiver(&self) -> &Receiver<Event> {
        &self.rx
    }
}

impl Drop for EventSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_loop(tx: Sender<Event>, stop: Arc<AtomicBool>, tick_rate: Duration) {
    let mut next_tick = Instant::now() + tick_rate;
    while !stop.load(Ordering::Acquire) {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        let sent = match crossterm::event::poll(timeout) {
            Ok(true) => match crossterm::event::read() {
                Ok(e) => tx.send(Event::Input(e)),
                Err(e) => {
                    let _ = tx.send(Event::Failed(e.to_string()));
                    return;
                }
            },
            Ok(false) => Ok(()),
            Err(e) => {
                let _ = tx.send(Event::Failed(e.to_string()));
                return;
            }
        };
        if sent.is_err() {
            return;
        }
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + tick_rate;
            if tx.send(Event::Tick).is_err() {
                return;
            }
        }
    }
}
