//! Coalescing of identical diagnoses in flight: the first caller starts one shared task (one
//! InvokeDiagnosis and one polling loop), later callers with the same key attach to it, and all
//! receive its progress and its result.
//!
//! A caller leaving does not stop the others. When the last caller leaves, the task stops at
//! once if that caller cancelled (`notifications/cancelled`), otherwise it keeps running for a
//! grace period: the caller's connection broke, and a reconnecting client that repeats the
//! call attaches to the same task, or receives its result if it finished meanwhile.
//!
//! Hand-written because the crates that deduplicate futures (e.g. `futures::Shared`) cancel
//! with the last waiter and know neither grace periods nor progress.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{CallCtx, Services, envelope::DiagnosisResult};
use crate::upstream;

/// The latest progress of a shared task: done, total, message.
pub type Progress = (f64, f64, String);

#[derive(Clone)]
enum State<V> {
    Running(Option<Progress>),
    Done(V),
}

struct Flight<V> {
    state: watch::Sender<State<V>>,
    stop: CancellationToken,
    /// Callers attached now, and how often the count fell to zero (so a stale grace timer
    /// does not stop a task that was rejoined and left again later). Changed under the map lock.
    callers: Mutex<(usize, u64)>,
}

type Map<V> = Arc<Mutex<HashMap<String, Arc<Flight<V>>>>>;

/// The shared tasks in flight, by key. Cloning shares the table.
pub struct Flights<V> {
    map: Map<V>,
}

impl<V> Default for Flights<V> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

impl<V> Clone for Flights<V> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
        }
    }
}

/// What the shared task uses to publish its progress to every attached caller.
#[derive(Clone)]
pub struct Reporter<V>(watch::Sender<State<V>>);

impl<V> Reporter<V> {
    pub fn progress(&self, done: f64, total: f64, message: String) {
        self.0.send_modify(|s| {
            if let State::Running(p) = s {
                *p = Some((done, total, message));
            }
        });
    }
}

/// One caller's attachment to a shared task. Dropping it detaches.
pub struct Ticket<V: Send + Sync + 'static> {
    key: String,
    flight: Arc<Flight<V>>,
    map: Map<V>,
    grace: Duration,
    cancelled: bool,
    /// Whether this caller started the task (false: it attached to one already running).
    pub started: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<V: Clone + Send + Sync + 'static> Flights<V> {
    /// Attaches to the task for `key`, or starts it with `start(reporter, stop)` on the runtime.
    /// `grace` is how long the task outlives its last caller when that caller did not cancel.
    pub fn join<F, Fut>(&self, key: String, grace: Duration, start: F) -> Ticket<V>
    where
        F: FnOnce(Reporter<V>, CancellationToken) -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let mut map = lock(&self.map);
        if let Some(flight) = map.get(&key) {
            lock(&flight.callers).0 += 1;
            return Ticket {
                key,
                flight: flight.clone(),
                map: self.map.clone(),
                grace,
                cancelled: false,
                started: false,
            };
        }
        let (state, _) = watch::channel(State::Running(None));
        let flight = Arc::new(Flight {
            state: state.clone(),
            stop: CancellationToken::new(),
            callers: Mutex::new((1, 0)),
        });
        map.insert(key.clone(), flight.clone());
        drop(map);

        let fut = start(Reporter(state), flight.stop.clone());
        let (table, driver_key, driver_flight) = (self.map.clone(), key.clone(), flight.clone());
        tokio::spawn(async move {
            let stop = driver_flight.stop.clone();
            let value = tokio::select! {
                _ = stop.cancelled() => None,
                v = fut => Some(v),
            };
            let mut map = lock(&table);
            let callers = lock(&driver_flight.callers).0;
            match value {
                // Someone is waiting: hand it over; the next identical call starts afresh.
                Some(v) if callers > 0 => {
                    driver_flight.state.send_replace(State::Done(v));
                    remove_if_same(&mut map, &driver_key, &driver_flight);
                }
                // Nobody is attached (grace period): keep the result for a reconnecting caller;
                // the pending grace timer removes it.
                Some(v) => {
                    driver_flight.state.send_replace(State::Done(v));
                }
                None => remove_if_same(&mut map, &driver_key, &driver_flight),
            }
        });
        Ticket {
            key,
            flight,
            map: self.map.clone(),
            grace,
            cancelled: false,
            started: true,
        }
    }

    /// How many shared tasks are in the table (running, or finished and kept for a caller).
    #[cfg(test)]
    pub fn count(&self) -> usize {
        lock(&self.map).len()
    }
}

fn remove_if_same<V>(
    map: &mut HashMap<String, Arc<Flight<V>>>,
    key: &str,
    flight: &Arc<Flight<V>>,
) {
    if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
        map.remove(key);
    }
}

impl<V: Clone + Send + Sync + 'static> Ticket<V> {
    /// Waits for the result, passing each new progress to `on_progress`. Returns `None` when
    /// `cancel` fires first: this caller is leaving; see [`Ticket::cancelled`].
    pub async fn wait<P, PF>(&mut self, cancel: &CancellationToken, mut on_progress: P) -> Option<V>
    where
        P: FnMut(Progress) -> PF,
        PF: Future<Output = ()>,
    {
        let mut rx = self.flight.state.subscribe();
        loop {
            let current = rx.borrow_and_update().clone();
            match current {
                State::Done(v) => {
                    // A result kept for a reconnecting caller is delivered once.
                    remove_if_same(&mut lock(&self.map), &self.key, &self.flight);
                    return Some(v);
                }
                State::Running(Some(p)) => on_progress(p).await,
                State::Running(None) => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The sender lives in the flight we hold; it cannot be gone.
                        return None;
                    }
                }
            }
        }
    }
}

impl<V: Send + Sync + 'static> Ticket<V> {
    /// Marks this caller's leaving as a cancellation: if it is the last caller, the task stops
    /// at once instead of running on for the grace period.
    pub fn cancelled(&mut self) {
        self.cancelled = true;
    }
}

impl<V: Send + Sync + 'static> Drop for Ticket<V> {
    fn drop(&mut self) {
        let mut map = lock(&self.map);
        let mut callers = lock(&self.flight.callers);
        callers.0 -= 1;
        if callers.0 > 0 {
            return;
        }
        callers.1 += 1;
        let epoch = callers.1;
        drop(callers);
        if self.cancelled || self.grace.is_zero() {
            self.flight.stop.cancel();
            remove_if_same(&mut map, &self.key, &self.flight);
            return;
        }
        drop(map);
        let (table, key, flight, grace) = (
            self.map.clone(),
            self.key.clone(),
            self.flight.clone(),
            self.grace,
        );
        // Drop can run outside a runtime only at shutdown, when nothing is left to keep alive.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::time::sleep(grace).await;
                let mut map = lock(&table);
                let callers = lock(&flight.callers);
                if callers.0 == 0 && callers.1 == epoch {
                    flight.stop.cancel();
                    drop(callers);
                    remove_if_same(&mut map, &key, &flight);
                }
            });
        }
    }
}

/// How long after a cancellation the client's transport has closed if the cancellation came
/// from a lost connection.
const LOST_CONNECTION_SETTLE: Duration = Duration::from_millis(100);

/// A shared diagnosis's result and the RequestId of the last SysOM answer it saw (for every
/// caller's log record).
pub type Outcome = (DiagnosisResult, Option<String>);

/// Runs a diagnosis as the shared task for `key` (`run` starts it if none is in flight) and
/// waits for its result with this caller's cancellation and progress. `None`: the caller
/// cancelled.
pub(super) async fn diagnosis<F, Fut>(
    services: Arc<Services>,
    key: String,
    ctx: CallCtx,
    run: F,
) -> Option<DiagnosisResult>
where
    F: FnOnce(Arc<Services>, CallCtx) -> Fut,
    Fut: Future<Output = DiagnosisResult> + Send + 'static,
{
    let flights = services.flights.clone();
    let grace = services.diagnosis.detach_grace;
    let mut ticket = flights.join(key, grace, |reporter, stop| {
        upstream::with_request_id(run(services, CallCtx::shared(stop, reporter)))
    });
    if !ticket.started {
        tracing::debug!("attached to an identical diagnosis in flight");
    }
    let Some((result, request_id)) = ticket
        .wait(&ctx.cancel, |(done, total, message)| {
            ctx.progress(done, total, message)
        })
        .await
    else {
        // rmcp cancels a call both for notifications/cancelled and when the client's
        // connection ends (stateless HTTP); the transport closes just after the latter. Only a
        // real cancellation stops the shared task at once.
        if !ctx.connection_lost() {
            tokio::time::sleep(LOST_CONNECTION_SETTLE).await;
        }
        if !ctx.connection_lost() {
            ticket.cancelled();
        }
        return None;
    };
    upstream::note_request_id(request_id);
    Some(result)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A task that counts its starts and finishes when `release` fires.
    fn task(
        starts: &Arc<AtomicUsize>,
        release: &CancellationToken,
    ) -> impl FnOnce(Reporter<u32>, CancellationToken) -> futures::future::BoxFuture<'static, u32>
    {
        let (starts, release) = (starts.clone(), release.clone());
        move |reporter, _stop| {
            starts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                reporter.progress(1.0, 2.0, "half".into());
                release.cancelled().await;
                42
            })
        }
    }

    async fn no_progress(_: Progress) {}

    #[tokio::test]
    async fn identical_calls_share_one_task_and_both_get_the_result() {
        let flights = Flights::default();
        let (starts, release) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        let never = CancellationToken::new();
        let mut a = flights.join("k".into(), Duration::ZERO, task(&starts, &release));
        let mut b = flights.join("k".into(), Duration::ZERO, task(&starts, &release));
        assert!(a.started && !b.started);
        release.cancel();
        let (ra, rb) = tokio::join!(a.wait(&never, no_progress), b.wait(&never, no_progress));
        assert_eq!((ra, rb), (Some(42), Some(42)));
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        drop((a, b));
        assert_eq!(flights.count(), 0, "a delivered result is not kept");
    }

    #[tokio::test]
    async fn different_keys_do_not_share() {
        let flights = Flights::default();
        let (starts, release) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        let _a = flights.join("k1".into(), Duration::ZERO, task(&starts, &release));
        let _b = flights.join("k2".into(), Duration::ZERO, task(&starts, &release));
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn one_caller_cancelling_leaves_the_other_running() {
        let flights = Flights::default();
        let (starts, release) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        let (cancel_a, never) = (CancellationToken::new(), CancellationToken::new());
        let mut a = flights.join("k".into(), Duration::ZERO, task(&starts, &release));
        let mut b = flights.join("k".into(), Duration::ZERO, task(&starts, &release));
        cancel_a.cancel();
        assert_eq!(a.wait(&cancel_a, no_progress).await, None);
        a.cancelled();
        drop(a);
        release.cancel();
        assert_eq!(b.wait(&never, no_progress).await, Some(42));
    }

    #[tokio::test]
    async fn last_caller_cancelling_stops_the_task() {
        let flights = Flights::default();
        let (starts, release) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        let cancel = CancellationToken::new();
        let mut a = flights.join(
            "k".into(),
            Duration::from_secs(3600),
            task(&starts, &release),
        );
        let stop = a.flight.stop.clone();
        cancel.cancel();
        assert_eq!(a.wait(&cancel, no_progress).await, None);
        a.cancelled();
        drop(a);
        assert!(stop.is_cancelled(), "a cancelled task has no grace period");
        assert_eq!(flights.count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_detached_task_finishes_within_grace_and_a_rejoining_caller_gets_the_result() {
        let flights = Flights::default();
        let (starts, release) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        let never = CancellationToken::new();
        let grace = Duration::from_secs(60);
        drop(flights.join("k".into(), grace, task(&starts, &release)));
        release.cancel();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut again = flights.join("k".into(), grace, task(&starts, &release));
        assert!(
            !again.started,
            "the reconnecting caller attaches to the kept task"
        );
        assert_eq!(again.wait(&never, no_progress).await, Some(42));
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_detached_task_stops_after_the_grace_period() {
        let flights = Flights::default();
        let (starts, release) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        let ticket = flights.join("k".into(), Duration::from_secs(60), task(&starts, &release));
        let stop = ticket.flight.stop.clone();
        drop(ticket);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!stop.is_cancelled());
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(stop.is_cancelled());
        assert_eq!(flights.count(), 0);
    }

    #[tokio::test]
    async fn attached_callers_see_progress() {
        let flights = Flights::default();
        let (starts, release) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        let never = CancellationToken::new();
        let mut a = flights.join("k".into(), Duration::ZERO, task(&starts, &release));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let waiter = a.wait(&never, move |p| {
            let sink = sink.clone();
            let release = release.clone();
            async move {
                sink.lock().unwrap().push(p.2);
                release.cancel();
            }
        });
        assert_eq!(waiter.await, Some(42));
        assert_eq!(*seen.lock().unwrap(), vec!["half".to_string()]);
    }
}
