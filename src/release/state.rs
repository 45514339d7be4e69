//! What the release service remembers between requests, behind one trait: the challenge
//! nonces (each *taken* once, like rustls' `StoresServerSessions::take`), the licence
//! allocations counted from the ledger, the live releases and their withdrawals.
//! [`LocalState`] keeps it in this process's memory (the embedded default); a state shared by
//! several replicas is another implementation of [`ReleaseState`], not another path through
//! the handlers.
//!
//! Deciding under an allocation without holding a lock across the ledger's fsync:
//! [`LocalState::reserve`] decides under the state's lock with the licence use the ledger
//! counts *plus* what decisions still on their way to the ledger hold, and an allowed
//! decision under a licence leaves a hold of its own; the caller appends the record (so
//! concurrent decisions share the log's group commit) and then [`ReleaseState::commit`]s the
//! hold at its ledger index, or [`ReleaseState::cancel`]s it when the append failed. Two
//! concurrent requests can therefore never both take a licence's last release.

use super::engine::{Grant, Judged};
use crate::ledger::backend::LedgerBackend;
use crate::ledger::LedgerError;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use weightvault_core::facts::Usage;
use weightvault_ledger::record::Record;
use weightvault_ledger::usage::Allocations;
use weightvault_release::approvals::ApprovalBook;

/// A state that cannot be read or written (a shared store unreachable); the request fails
/// closed.
#[derive(Debug, thiserror::Error)]
#[error("release state: {0}")]
pub struct StateError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Why a decision was not decided and recorded: nothing is released either way.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The ledger could not be written (the service answers 503 `ledger_unavailable`).
    #[error("the ledger cannot be written: {0}")]
    Ledger(#[source] LedgerError),
    /// The state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A withdrawn release: its id and the checks that now fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    /// Release id.
    pub id: [u8; 16],
    /// The checks the new policy fails.
    pub failed: Vec<String>,
}

/// An allocation held by a decision between [`LocalState::reserve`] and its ledger append.
#[derive(Debug)]
#[must_use = "a hold is committed or cancelled"]
pub struct Hold(u64);

/// How a release decision is judged: the licence use in, the decision and its record out.
pub type Judge<'a> = dyn FnMut(&BTreeMap<String, Usage>) -> Judged + Send + 'a;

/// What a decision reads of the usage counters.
#[derive(Debug, Clone)]
pub struct Reads {
    /// The decision's time.
    pub now: OffsetDateTime,
    /// The counters its judge looks up ([`crate::policy::counters_read`]): its licences' and
    /// its daily quota counters. A state gives it these alone, so that what a decision costs
    /// does not grow with every requester and day the state counts.
    pub counters: Vec<String>,
}

/// What the release service remembers between requests.
///
/// Asynchronous (boxed futures, `async_trait`), because a state shared by replicas is a
/// database on the network: the handlers await it on the service's runtime instead of
/// blocking a worker thread for each round trip (with 2 workers and 200 requests in flight a
/// blocking call would serialise them and defeat the database's group commit). The in-memory
/// [`LocalState`] answers at once.
#[async_trait::async_trait]
pub trait ReleaseState: Send + Sync {
    /// Issues a nonce to `client`, usable until `expires_at`.
    async fn issue_nonce(
        &self,
        client: &[u8; 32],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<String, StateError>;

    /// Takes `nonce` for `client`: true only if it was issued to this client, has not expired
    /// and was never taken before. A nonce issued to this client is spent whatever the answer.
    async fn take_nonce(
        &self,
        nonce: &str,
        client: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<bool, StateError>;

    /// Decides with `judge` under the current licence use and records the decision's record
    /// in the ledger before returning its index: decide-and-record, so that an allocation is
    /// counted exactly once and two concurrent decisions never both take a licence's last
    /// release. [`LocalState`] holds the allocation, appends to `ledger` (sharing its group
    /// commit) and commits or cancels the hold; a database state sequences the record into
    /// its own ledger in the same transaction that updates the licence counters (and then
    /// `ledger` must be that database's ledger).
    ///
    /// `judge` may be called more than once for one decision: a database state judges a
    /// batch of decisions at once and judges one again when the records sequenced before it
    /// changed the use it was judged under. It must therefore be a pure function of the use
    /// it is given (no side effects, no counting of its own calls); the record of the last
    /// call is the one recorded.
    ///
    /// `judge` is given the counters `reads` names and no others (those a state lacks are
    /// absent: nothing used).
    async fn decide(
        &self,
        judge: &mut Judge<'_>,
        ledger: &Arc<dyn LedgerBackend>,
        reads: &Reads,
    ) -> Result<(Judged, u64), DecideError>;

    /// Counts a record appended at `index` by anything else (stream ends, spooled records).
    /// A state whose ledger counts each entry as it is sequenced has nothing to do.
    async fn count(&self, index: u64, record: &Record) -> Result<(), StateError>;

    /// The approvals of held releases in force at `now` when each lasts `hours`
    /// ([`ApprovalBook`]): counted from the ledger's records as [`ReleaseState::count`] and
    /// [`ReleaseState::decide`] see them, or read from a database state's shared ledger.
    async fn approvals(
        &self,
        hours: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<crate::policy::Approval>, StateError>;

    /// Licence use not counting the decision at `index` (to decide it again).
    async fn used_by_others(&self, index: u64) -> Result<BTreeMap<String, Usage>, StateError>;

    /// Keeps a release (until it expires: see [`ReleaseState::prune`]).
    async fn put_release(&self, grant: Grant, now: OffsetDateTime) -> Result<(), StateError>;

    /// A release by id.
    async fn release(&self, id: &[u8; 16]) -> Result<Option<Arc<Grant>>, StateError>;

    /// Releases not expired at `now` and not withdrawn.
    async fn live_releases(&self, now: OffsetDateTime) -> Result<Vec<Arc<Grant>>, StateError>;

    /// Withdraws a release: shard requests are refused from now on, and every subscriber of
    /// [`ReleaseState::withdrawals`] hears of it (running streams end).
    async fn withdraw(&self, w: Withdrawal) -> Result<(), StateError>;

    /// Withdrawals from now on.
    fn withdrawals(&self) -> tokio::sync::broadcast::Receiver<Withdrawal>;

    /// Whether the state can be read and written now (for `/readyz`); in-process state always
    /// can.
    fn ready(&self) -> Result<(), StateError> {
        Ok(())
    }

    /// Forgets the nonces and releases expired by `now` (the service calls it on a timer). A
    /// database state sweeps them as it writes new ones, so has nothing to do here.
    async fn prune(&self, _now: OffsetDateTime) -> Result<(), StateError> {
        Ok(())
    }
}

/// Unused, unexpired nonces one client may hold in [`LocalState`]; asking for more forgets its
/// oldest (a client that asks and never uses them cannot fill the memory). Far above what the
/// default challenge rate lets one certificate hold (a burst of 20 plus 60 a minute over a
/// 120 s nonce lifetime: 140), so that a fleet sharing one certificate under roomier rates is
/// not refused: 100 nodes asking at once is a test (`tests/release.rs`).
pub const MAX_LIVE_NONCES_PER_CLIENT: usize = 1024;

struct Nonce {
    client: [u8; 32],
    expires_at: OffsetDateTime,
    used: bool,
}

#[derive(Default)]
struct Inner {
    nonces: HashMap<String, Nonce>,
    /// Each client's nonces, oldest first (some may be taken or expired already).
    by_client: HashMap<[u8; 32], std::collections::VecDeque<String>>,
    alloc: Allocations,
    /// Reviews open and approvals made, from the ledger.
    book: ApprovalBook,
    /// The day whose predecessors' quota counters were last forgotten.
    forgot_before: String,
    /// Counters (licence and daily quotas) and bytes each decision on its way to the
    /// ledger holds.
    held: HashMap<u64, (Vec<String>, u64)>,
    next_hold: u64,
    releases: HashMap<[u8; 16], Arc<Grant>>,
}

/// The service's state in this process's memory (one replica; gone when it stops, except the
/// allocations and the approvals, which are counted from the ledger at start).
pub struct LocalState {
    inner: Mutex<Inner>,
    withdrawn: tokio::sync::broadcast::Sender<Withdrawal>,
}

impl LocalState {
    /// A state whose allocations and approvals start from those counted in the ledger.
    pub fn new(alloc: Allocations, book: ApprovalBook) -> Self {
        LocalState {
            inner: Mutex::new(Inner {
                alloc,
                book,
                ..Inner::default()
            }),
            withdrawn: tokio::sync::broadcast::channel(256).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("release state lock")
    }
}

/// How long the in-memory state keeps a day's quota counters: longer than a release lives
/// (at most a week), so that a reload decides any live release again under its day's use.
pub const KEEP_QUOTA_DAYS: time::Duration = time::Duration::days(8);

/// `YYYY-MM-DD` of `t` in UTC: the day of a daily quota counter.
fn utc_day(t: OffsetDateTime) -> String {
    // The form the policy's quota counters use (`rules::quota_counter`: the date's Display).
    t.to_offset(time::UtcOffset::UTC).date().to_string()
}

fn random_hex16() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("OS randomness");
    hex::encode(b)
}

impl LocalState {
    /// Decides with `judge` under the current licence use (counted plus held), atomically
    /// with holding the allocation an allowed decision takes.
    pub fn reserve(&self, judge: &mut Judge<'_>, reads: &[String]) -> (Judged, Hold) {
        let mut s = self.lock();
        let mut used: BTreeMap<String, Usage> = reads
            .iter()
            .filter_map(|k| Some((k.clone(), *s.alloc.used.get(k)?)))
            .collect();
        for (counters, size) in s.held.values() {
            for c in counters.iter().filter(|c| reads.contains(c)) {
                let u = used.entry(c.clone()).or_default();
                u.releases += 1;
                u.bytes = u.bytes.saturating_add(*size);
            }
        }
        let judged = judge(&used);
        let h = s.next_hold;
        s.next_hold += 1;
        let (counters, size) = judged.counters();
        if !counters.is_empty() {
            s.held.insert(h, (counters, size));
        }
        (judged, Hold(h))
    }

    /// The held decision's record is in the ledger at `index`: it counts from now on.
    pub fn commit(&self, hold: Hold, index: u64, record: &Record) {
        let mut s = self.lock();
        s.held.remove(&hold.0);
        s.alloc.add(index, record);
        s.book.add(index, record);
    }

    /// The held decision never reached the ledger: its allocation is free again.
    pub fn cancel(&self, hold: Hold) {
        self.lock().held.remove(&hold.0);
    }

    /// Forgets the daily quota counters of the days no live release can be decided again
    /// on (a release lives at most a week: `serve --release-ttl`; a reload decides it again
    /// at its own time), once a day (see [`Allocations::forget_days_before`]).
    fn forget_old_days(&self, now: OffsetDateTime) {
        let since = utc_day(now - KEEP_QUOTA_DAYS);
        let mut s = self.lock();
        if s.forgot_before != since {
            s.alloc.forget_days_before(&since);
            s.forgot_before = since;
        }
    }

    /// Licence use not counting the decision at `index`.
    pub fn used_by_others_now(&self, index: u64) -> BTreeMap<String, Usage> {
        self.lock().alloc.used_by_others(index)
    }
}

#[async_trait::async_trait]
impl ReleaseState for LocalState {
    async fn issue_nonce(
        &self,
        client: &[u8; 32],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<String, StateError> {
        let nonce = random_hex16();
        let mut s = self.lock();
        let Inner {
            nonces, by_client, ..
        } = &mut *s;
        let mine = by_client.entry(*client).or_default();
        // At the cap: those already spent or expired go first, then the oldest live ones
        // (below it the queue is left to the timer's prune, so a challenge costs O(1)).
        if mine.len() >= MAX_LIVE_NONCES_PER_CLIENT {
            mine.retain(|n| nonces.get(n).is_some_and(|e| !e.used && e.expires_at > now));
        }
        while mine.len() >= MAX_LIVE_NONCES_PER_CLIENT {
            if let Some(old) = mine.pop_front() {
                nonces.remove(&old);
            }
        }
        mine.push_back(nonce.clone());
        nonces.insert(
            nonce.clone(),
            Nonce {
                client: *client,
                expires_at,
                used: false,
            },
        );
        Ok(nonce)
    }

    async fn take_nonce(
        &self,
        nonce: &str,
        client: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<bool, StateError> {
        let mut s = self.lock();
        Ok(match s.nonces.get_mut(nonce) {
            Some(e) if &e.client == client => {
                let fresh = !e.used && e.expires_at > now;
                e.used = true;
                fresh
            }
            _ => false,
        })
    }

    async fn decide(
        &self,
        judge: &mut Judge<'_>,
        ledger: &Arc<dyn LedgerBackend>,
        reads: &Reads,
    ) -> Result<(Judged, u64), DecideError> {
        self.forget_old_days(reads.now);
        let (judged, hold) = self.reserve(judge, &reads.counters);
        // The append waits for the log's fsync (shared with concurrent appends) off the
        // runtime's workers, without the state's lock.
        let (l, rec) = (ledger.clone(), judged.record.clone());
        let appended = tokio::task::spawn_blocking(move || l.append(&rec))
            .await
            .map_err(|e| StateError(Box::new(e)))?;
        match appended {
            Ok(i) => {
                self.commit(hold, i, &judged.record);
                Ok((judged, i))
            }
            Err(e) => {
                self.cancel(hold);
                Err(DecideError::Ledger(e))
            }
        }
    }

    async fn count(&self, index: u64, record: &Record) -> Result<(), StateError> {
        let mut s = self.lock();
        s.alloc.add(index, record);
        s.book.add(index, record);
        Ok(())
    }

    async fn approvals(
        &self,
        hours: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<crate::policy::Approval>, StateError> {
        Ok(self.lock().book.in_force(hours, now))
    }

    async fn used_by_others(&self, index: u64) -> Result<BTreeMap<String, Usage>, StateError> {
        Ok(self.used_by_others_now(index))
    }

    async fn put_release(&self, grant: Grant, _now: OffsetDateTime) -> Result<(), StateError> {
        self.lock().releases.insert(grant.id, Arc::new(grant));
        Ok(())
    }

    async fn prune(&self, now: OffsetDateTime) -> Result<(), StateError> {
        let mut s = self.lock();
        let Inner {
            nonces,
            by_client,
            releases,
            ..
        } = &mut *s;
        nonces.retain(|_, v| !v.used && v.expires_at > now);
        by_client.retain(|_, q| {
            q.retain(|n| nonces.contains_key(n));
            !q.is_empty()
        });
        releases.retain(|_, g| g.expires_at > now);
        Ok(())
    }

    async fn release(&self, id: &[u8; 16]) -> Result<Option<Arc<Grant>>, StateError> {
        Ok(self.lock().releases.get(id).cloned())
    }

    async fn live_releases(&self, now: OffsetDateTime) -> Result<Vec<Arc<Grant>>, StateError> {
        Ok(self
            .lock()
            .releases
            .values()
            .filter(|g| g.withdrawn.is_none() && g.expires_at >= now)
            .cloned()
            .collect())
    }

    async fn withdraw(&self, w: Withdrawal) -> Result<(), StateError> {
        {
            let mut s = self.lock();
            if let Some(g) = s.releases.get_mut(&w.id) {
                let mut g2 = (**g).clone();
                g2.withdrawn = Some(w.failed.clone());
                *g = Arc::new(g2);
            }
        }
        // No subscriber (no stream running) is fine.
        let _ = self.withdrawn.send(w);
        Ok(())
    }

    fn withdrawals(&self) -> tokio::sync::broadcast::Receiver<Withdrawal> {
        self.withdrawn.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Authority, HostClaims, ReleaseDecision, ReleaseRequest};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

    /// What `judge_under` reads: licence `L`.
    fn l() -> Vec<String> {
        vec!["L".into()]
    }

    /// A decision under licence `L` of `size` bytes, allowed while fewer than `max` releases
    /// are used (what `engine::judge` does with the policy's allocation, reduced to it).
    fn judge_under(max: u64, size: u64) -> impl FnMut(&BTreeMap<String, Usage>) -> Judged {
        move |used| {
            let allowed = used.get("L").map_or(0, |u| u.releases) < max;
            let mut record = Record::action(
                "2026-12-01T12:00:00Z",
                "release-decision",
                "r",
                "m",
                Some("1"),
                vec![],
                if allowed { "allowed" } else { "denied" },
            );
            record.authority = Some(crate::ledger::words::RecordAuthority::Licence("L".into()));
            record.bytes = Some(size);
            Judged {
                decision: ReleaseDecision {
                    allowed,
                    outcome: if allowed {
                        crate::policy::DecisionOutcome::Allow
                    } else {
                        crate::policy::DecisionOutcome::Deny
                    },
                    checks: vec![],
                    authority: Some(Authority::Licence { id: "L".into() }),
                    obligations: None,
                    tier: None,
                    dry_run: false,
                    review_key: None,
                    approved_by: None,
                },
                record,
                request: ReleaseRequest {
                    requester: "r".into(),
                    model: "m".into(),
                    sealed_facts: None,
                    host: HostClaims {
                        host_id: "h".into(),
                        country: "US".into(),
                        region: "r1".into(),
                        attester: "a".into(),
                        issued_at: NOW,
                        expires_at: NOW,
                        signature_valid: true,
                        nonce_fresh: true,
                        facility: None,
                    },
                    source_ip: None,
                    time: NOW,
                    used: used.clone(),
                    size,
                    approvals: vec![],
                    dry_run: false,
                },
                files: vec![],
                codeword: None,
            }
        }
    }

    #[test]
    fn concurrent_decisions_appending_outside_the_lock_never_exceed_an_allocation() {
        let st = Arc::new(LocalState::new(
            Allocations::default(),
            ApprovalBook::default(),
        ));
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let allowed: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..24)
                .map(|k| {
                    let (st, next) = (st.clone(), next.clone());
                    s.spawn(move || {
                        let (j, hold) = st.reserve(&mut judge_under(5, 100), &l());
                        // The ledger append happens here, without the state's lock; one in
                        // three fails and gives its allocation back.
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        if k % 3 == 0 {
                            st.cancel(hold);
                            return 0;
                        }
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        st.commit(hold, i, &j.record);
                        u64::from(j.decision.allowed)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let used = st.used_by_others_now(u64::MAX);
        assert_eq!(
            used["L"].releases, allowed,
            "what was committed is what counts"
        );
        assert!(allowed <= 5, "{allowed} releases under an allocation of 5");
        assert_eq!(used["L"].bytes, allowed * 100);
        // With every hold settled, what failed to reach the ledger is free again.
        let (j, hold) = st.reserve(&mut judge_under(5, 100), &l());
        assert_eq!(j.decision.allowed, allowed < 5);
        st.cancel(hold);
    }

    #[test]
    fn a_decision_forgets_the_quota_counters_of_days_no_decision_reads() {
        let mut alloc = Allocations::default();
        for (i, day) in ["2026-11-22", "2026-11-23", "2026-12-01"]
            .iter()
            .enumerate()
        {
            let mut r = Record::action(
                &format!("{day}T08:00:00Z"),
                "release-decision",
                "r",
                "m",
                None,
                vec![],
                "allowed",
            );
            r.bytes = Some(1);
            alloc.add(i as u64, &r);
        }
        let st = LocalState::new(alloc, ApprovalBook::default());
        let dir = tempfile::tempdir().unwrap();
        let ledger: Arc<dyn LedgerBackend> =
            Arc::new(crate::ledger::Ledger::open(dir.path(), "test").unwrap().0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        rt.block_on(
            st.decide(
                &mut |used| {
                    seen.lock()
                        .unwrap()
                        .push(used.keys().cloned().collect::<Vec<_>>());
                    judge_under(5, 1)(used)
                },
                &ledger,
                &Reads {
                    now: NOW,
                    counters: ["2026-11-22", "2026-11-23", "2026-12-01"]
                        .map(|d| format!("quota:requester:r:{d}"))
                        .to_vec(),
                },
            ),
        )
        .unwrap();
        // NOW is 2026-12-01: the eight days before and that day stay.
        assert_eq!(
            seen.lock().unwrap()[0],
            [
                "quota:requester:r:2026-11-23",
                "quota:requester:r:2026-12-01"
            ]
        );
    }

    #[test]
    fn a_held_allocation_counts_for_others_until_committed_or_cancelled() {
        let st = LocalState::new(Allocations::default(), ApprovalBook::default());
        let (a, ha) = st.reserve(&mut judge_under(1, 10), &l());
        assert!(a.decision.allowed);
        let (b, hb) = st.reserve(&mut judge_under(1, 10), &l());
        assert!(
            !b.decision.allowed,
            "the last release is held by the first decision"
        );
        st.cancel(hb);
        st.cancel(ha);
        let (c, hc) = st.reserve(&mut judge_under(1, 10), &l());
        assert!(c.decision.allowed, "a cancelled hold frees the allocation");
        st.commit(hc, 7, &c.record);
        assert_eq!(st.used_by_others_now(7)["L"].releases, 0);
        assert_eq!(st.used_by_others_now(8)["L"].releases, 1);
    }

    #[tokio::test]
    async fn a_nonce_is_taken_once_and_only_by_its_client() {
        let st = LocalState::new(Allocations::default(), ApprovalBook::default());
        let (me, other) = ([1u8; 32], [2u8; 32]);
        let later = NOW + time::Duration::minutes(1);
        let n = st.issue_nonce(&me, NOW, later).await.unwrap();
        assert!(
            !st.take_nonce(&n, &other, NOW).await.unwrap(),
            "another client's nonce"
        );
        assert!(
            st.take_nonce(&n, &me, NOW).await.unwrap(),
            "not spent by the other client"
        );
        assert!(!st.take_nonce(&n, &me, NOW).await.unwrap(), "replayed");
        let m = st.issue_nonce(&me, NOW, later).await.unwrap();
        assert_ne!(m, n);
        assert!(
            !st.take_nonce(&m, &me, later + time::Duration::seconds(1))
                .await
                .unwrap(),
            "expired"
        );
        assert!(
            !st.take_nonce("00", &me, NOW).await.unwrap(),
            "never issued"
        );
    }

    #[tokio::test]
    async fn a_client_holds_a_bounded_number_of_nonces_and_expired_ones_are_forgotten() {
        let st = LocalState::new(Allocations::default(), ApprovalBook::default());
        let (me, other) = ([1u8; 32], [2u8; 32]);
        let later = NOW + time::Duration::minutes(1);
        let mut mine = Vec::new();
        for _ in 0..MAX_LIVE_NONCES_PER_CLIENT + 36 {
            mine.push(st.issue_nonce(&me, NOW, later).await.unwrap());
        }
        let theirs = st.issue_nonce(&other, NOW, later).await.unwrap();
        assert_eq!(st.lock().nonces.len(), MAX_LIVE_NONCES_PER_CLIENT + 1);
        // The oldest 36 were forgotten; the newest still take; the other client's is kept.
        for n in &mine[..36] {
            assert!(!st.take_nonce(n, &me, NOW).await.unwrap());
        }
        for n in &mine[36..] {
            assert!(st.take_nonce(n, &me, NOW).await.unwrap());
        }
        // Spent and expired nonces go at the next prune; a live one stays.
        let live = st
            .issue_nonce(&other, later, later + time::Duration::minutes(1))
            .await
            .unwrap();
        st.prune(later).await.unwrap();
        assert_eq!(st.lock().nonces.len(), 1);
        assert_eq!(st.lock().by_client.len(), 1);
        assert!(!st.take_nonce(&theirs, &other, later).await.unwrap());
        assert!(st.take_nonce(&live, &other, later).await.unwrap());
    }
}
