//! Who may hold a shard isolate's token budget now, who waits for it, and
//! in what order: the admission policy, apart from the model and its caches
//! (shard/src/shard.rs) so that every rule is a unit test.
//!
//! Every request gets one id for its life: its ticket while it waits, its
//! pass's handle once admitted. Ids only grow, from a first id the entry
//! gives a new module instance (past every id an earlier instance handed
//! out), so a stub that outlived a trapped instance never names another
//! request's pass.
//!
//! The rules, each there because of a failure seen under load (issue 30):
//! - **Bounded waiting.** At most [`Limits::queue`] requests wait, each at
//!   most [`Limits::wait`]; beyond that a request is refused at once, with a
//!   time to retry after, rather than held until the caller's own timeout.
//! - **First come, first served.** Whoever waits is admitted in arrival
//!   order, and a new request never overtakes one waiting; when room comes
//!   back every waiter that now fits is admitted at once, in order, not one
//!   per freed pass. A waiter that fits its share but not the free room
//!   stops those behind it, so a long pass is not starved by short ones.
//! - **A bounded share per scope while others wait.** A scope (the caller's
//!   API key) that already holds passes may take more only within
//!   `budget / scopes` (scopes holding or waiting) while another scope
//!   waits; it is passed over until then, and its turn keeps its place. A
//!   scope that holds nothing is always within its share: everyone gets one
//!   pass. With nobody else waiting a scope may fill the budget: the rule
//!   costs nothing without contention. Passes already admitted are never
//!   stopped to make room. The queue is shared the same way: when it is
//!   full, a new request of a scope that waits less than another takes the
//!   place of that scope's newest waiter.
//! - **Leases.** A pass's caller may vanish without a word: in workerd a
//!   client that hangs up mid-stream leaves the front's request stalled,
//!   and neither its close nor the stub's disposal ever reaches the shard
//!   (measured, docs/chat.md). So a live caller renews its lease: it calls
//!   the pass (a model pass, or a touch from a timer every second), and a
//!   pass that goes [`Limits::lease`] without a call is reclaimed, waiters
//!   or not. Time alone is not proof that a caller is gone: while the
//!   isolate's thread runs a long prefill (seconds; every isolate of a
//!   server shares it) no timer fires anywhere, so no caller could have
//!   called. A lease therefore runs only on evidence that timers run: a
//!   timer that fired on time (a caller's touch, a waiter's wake-up, an
//!   operator's `GET /`), counted from no earlier than the last time one
//!   fired late (the thread was frozen; everyone gets a full lease again).
//!
//! Time is the caller's (ms, from JavaScript): there is no clock here, so a
//! test says exactly when everything happens.

use std::collections::VecDeque;

/// Milliseconds, as the entry reads them from its clock.
pub type Millis = u64;

/// The gate's bounds: see the module's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tokens the admitted passes may reserve in all.
    pub budget: usize,
    /// Most requests waiting at once.
    pub queue: usize,
    /// Longest a request waits before it is refused.
    pub wait: Millis,
    /// A pass not called for this long while timers ran is reclaimed.
    pub lease: Millis,
    /// A timer that fires later than this after it was due shows that the
    /// thread was frozen until now.
    pub grace: Millis,
    /// Seconds a refused caller is told to wait before asking again.
    pub retry_after: u32,
}

impl Limits {
    /// The shard Workers' limits for a budget of `budget` tokens.
    ///
    /// `wait` stays under the front's 15 s bound on opening a pass
    /// (src/glue/shards.rs), so a refusal reaches the client as this
    /// shard's 503 with `Retry-After`, not as a timeout. `lease` is three
    /// of the front's touches (one a second, each on time within `grace`:
    /// at most 2 s apart), so a hung-up turn's reservation is back within
    /// ~4 s of its last touch, well inside `wait`.
    pub fn for_budget(budget: usize) -> Self {
        Limits {
            budget,
            queue: 16,
            wait: 10_000,
            lease: 3_000,
            grace: 1_000,
            retry_after: 5,
        }
    }
}

/// Why a request was not admitted. Each but `NeverFits` is worth retrying
/// after [`Limits::retry_after`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// More than [`Limits::queue`] requests would wait.
    QueueFull,
    /// It waited [`Limits::wait`] and room did not come.
    TimedOut,
    /// It asks for more than the whole budget.
    NeverFits { asked: usize, budget: usize },
}

/// Said of the shard: the front puts it after the shard's name.
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::QueueFull => write!(f, "is busy: too many requests already wait for it"),
            Refusal::TimedOut => write!(f, "is busy: no room came while the request waited"),
            Refusal::NeverFits { asked, budget } => write!(
                f,
                "cannot fit a pass of {asked} tokens in its budget of {budget}"
            ),
        }
    }
}

/// What the gate did to others while handling a change: the entry wakes
/// those waiting on `admitted` and `refused`, and ends the passes of
/// `reclaimed`.
#[derive(Debug, PartialEq, Eq)]
pub struct Decisions<P> {
    /// Waiters now holding their reservation, with what they asked with.
    pub admitted: Vec<(u32, P)>,
    /// Waiters refused (out of time, or their place taken).
    pub refused: Vec<(u32, Refusal)>,
    /// Passes whose lease ran out.
    pub reclaimed: Vec<u32>,
}

impl<P> Default for Decisions<P> {
    fn default() -> Self {
        Decisions {
            admitted: Vec::new(),
            refused: Vec::new(),
            reclaimed: Vec::new(),
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It holds its reservation.
    Holds,
    /// It waits; nothing changes for it before this time unless another
    /// request ends (the entry's timer for it).
    Waits { until: Millis },
    /// Not a request of this gate (ended, refused, or an earlier
    /// instance's).
    Unknown,
}

struct Hold {
    id: u32,
    scope: String,
    tokens: usize,
    used: Millis,
}

struct Waiter<P> {
    id: u32,
    scope: String,
    tokens: usize,
    deadline: Millis,
    payload: P,
}

/// The admission state of one shard isolate: the reservations held and the
/// queue. `P` is what a waiter carries until it is admitted (its prompt).
pub struct Gate<P> {
    limits: Limits,
    holds: Vec<Hold>,
    queue: VecDeque<Waiter<P>>,
    next_id: u32,
    /// The last time a timer fired on time: leases run up to here.
    evidence: Millis,
    /// The last time a timer fired late: leases count from no earlier.
    thawed: Millis,
}

impl<P> Gate<P> {
    /// A gate whose ids start at `first_id` (0 is never an id).
    pub fn new(limits: Limits, first_id: u32) -> Self {
        Gate {
            limits,
            holds: Vec::new(),
            queue: VecDeque::new(),
            next_id: first_id.max(1),
            evidence: 0,
            thawed: 0,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Tokens the admitted passes reserve.
    pub fn reserved(&self) -> usize {
        self.holds.iter().map(|h| h.tokens).sum()
    }

    pub fn free(&self) -> usize {
        self.limits.budget.saturating_sub(self.reserved())
    }

    /// Takes `tokens` out of the budget for good (what the shard pins),
    /// if they are free now: false, and nothing changes, if not.
    pub fn pin(&mut self, tokens: usize) -> bool {
        let fits = tokens <= self.free();
        if fits {
            self.limits.budget -= tokens;
        }
        fits
    }

    pub fn holding(&self) -> usize {
        self.holds.len()
    }

    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// The id the next request will get.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Queues a request of `scope` for `tokens`, carrying `payload` until
    /// it is admitted: its id, which [`Gate::settle`] (always called next)
    /// may admit at once. Refused when it can never fit, or when the queue
    /// is full and its scope already waits as much as any other; then
    /// another scope's newest waiter gives up its place, and is in the
    /// returned decisions.
    pub fn ask(
        &mut self,
        scope: &str,
        tokens: usize,
        payload: P,
        now: Millis,
    ) -> Result<(u32, Decisions<P>), Refusal> {
        if tokens > self.limits.budget {
            return Err(Refusal::NeverFits {
                asked: tokens,
                budget: self.limits.budget,
            });
        }
        let mut decisions = Decisions::default();
        if self.queue.len() >= self.limits.queue {
            let waits = |s: &str| self.queue.iter().filter(|w| w.scope == s).count();
            let mine = waits(scope);
            // The scope that waits most, if it waits more than this one
            // would once it took a place.
            let crowded = self
                .queue
                .iter()
                .map(|w| (waits(&w.scope), &w.scope))
                .max_by_key(|&(n, _)| n)
                .filter(|&(n, _)| n > mine + 1)
                .map(|(_, s)| s.clone());
            let newest = crowded.and_then(|c| self.queue.iter().rposition(|w| w.scope == c));
            match newest.and_then(|i| self.queue.remove(i)) {
                Some(w) => decisions.refused.push((w.id, Refusal::QueueFull)),
                None => return Err(Refusal::QueueFull),
            }
        }
        let id = self.take_id();
        self.queue.push_back(Waiter {
            id,
            scope: scope.to_string(),
            tokens,
            deadline: now.saturating_add(self.limits.wait),
            payload,
        });
        Ok((id, decisions))
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        // 4 billion requests in one instance: wrap past 0, never to it.
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    /// A timer fired at `now`, `late` ms after it was due: evidence that
    /// timers run (callers could renew their leases), or, late, that the
    /// thread was frozen until now.
    pub fn timer(&mut self, now: Millis, late: Millis) {
        if late > self.limits.grace {
            self.thawed = self.thawed.max(now);
        } else {
            self.evidence = self.evidence.max(now);
        }
    }

    /// When pass `h`'s lease runs out, given timers run from then on.
    fn lease_end(&self, h: &Hold) -> Millis {
        h.used.max(self.thawed).saturating_add(self.limits.lease)
    }

    /// A call on pass `id`: its lease starts again. False if it holds
    /// nothing (ended, reclaimed, or never admitted).
    pub fn touch(&mut self, id: u32, now: Millis) -> bool {
        match self.holds.iter_mut().find(|h| h.id == id) {
            Some(h) => {
                h.used = h.used.max(now);
                true
            }
            None => false,
        }
    }

    /// Request `id` ends: its reservation, or its place in the queue, is
    /// given up (settle next). False if it had neither.
    pub fn release(&mut self, id: u32) -> bool {
        if let Some(i) = self.holds.iter().position(|h| h.id == id) {
            self.holds.swap_remove(i);
            return true;
        }
        if let Some(i) = self.queue.iter().position(|w| w.id == id) {
            self.queue.remove(i);
            return true;
        }
        false
    }

    pub fn standing(&self, id: u32, now: Millis) -> Standing {
        if self.holds.iter().any(|h| h.id == id) {
            return Standing::Holds;
        }
        match self.queue.iter().find(|w| w.id == id) {
            Some(w) => {
                // Besides its deadline, the first lease that can run out:
                // its own wake-up, on time, is the evidence that it did
                // (at once if it already may have).
                let lease = self
                    .holds
                    .iter()
                    .map(|h| self.lease_end(h).max(now + 1))
                    .min();
                let until = lease.map_or(w.deadline, |t| t.min(w.deadline));
                Standing::Waits { until }
            }
            None => Standing::Unknown,
        }
    }

    fn held_by(&self, scope: &str) -> usize {
        self.holds
            .iter()
            .filter(|h| h.scope == scope)
            .map(|h| h.tokens)
            .sum()
    }

    /// Whether waiter `i` may take `tokens` more for its scope now: always
    /// if its scope holds nothing or no other scope waits; else within
    /// `budget / scopes holding or waiting`.
    fn within_share(&self, i: usize) -> bool {
        let w = &self.queue[i];
        let held = self.held_by(&w.scope);
        if held == 0 || self.queue.iter().all(|o| o.scope == w.scope) {
            return true;
        }
        let mut scopes: Vec<&str> = self
            .holds
            .iter()
            .map(|h| h.scope.as_str())
            .chain(self.queue.iter().map(|o| o.scope.as_str()))
            .collect();
        scopes.sort_unstable();
        scopes.dedup();
        held + w.tokens <= self.limits.budget / scopes.len().max(1)
    }

    /// Applies the rules at `now`: reclaims the passes whose lease ran out,
    /// refuses the waiters out of time, then admits, in arrival order,
    /// every waiter within its share that fits, and stops at the first
    /// that does not fit (no overtaking).
    pub fn settle(&mut self, now: Millis) -> Decisions<P> {
        let mut decisions = Decisions::default();
        let evidence = self.evidence;
        let ended: Vec<u32> = self
            .holds
            .iter()
            .filter(|h| self.lease_end(h) <= evidence)
            .map(|h| h.id)
            .collect();
        self.holds.retain(|h| !ended.contains(&h.id));
        decisions.reclaimed = ended;
        let mut i = 0;
        while i < self.queue.len() {
            if self.queue[i].deadline <= now {
                if let Some(w) = self.queue.remove(i) {
                    decisions.refused.push((w.id, Refusal::TimedOut));
                }
                continue;
            }
            i += 1;
        }
        // The first waiter within its share, again after each admission
        // (one admitted may put another within its share).
        while let Some(i) = (0..self.queue.len()).find(|&i| self.within_share(i)) {
            if self.queue[i].tokens > self.free() {
                break;
            }
            let Some(w) = self.queue.remove(i) else {
                break;
            };
            self.holds.push(Hold {
                id: w.id,
                scope: w.scope,
                tokens: w.tokens,
                used: now,
            });
            decisions.admitted.push((w.id, w.payload));
        }
        decisions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(budget: usize) -> Limits {
        Limits {
            budget,
            queue: 4,
            wait: 1_000,
            lease: 10_000,
            grace: 1_000,
            retry_after: 5,
        }
    }

    fn gate(budget: usize) -> Gate<()> {
        Gate::new(limits(budget), 1)
    }

    /// Asks and settles at `now`: the id, and whether it was admitted at
    /// once.
    fn ask(g: &mut Gate<()>, scope: &str, tokens: usize, now: Millis) -> (u32, bool) {
        let (id, _) = g.ask(scope, tokens, (), now).expect("queued");
        let admitted = g.settle(now).admitted.iter().any(|(a, _)| *a == id);
        (id, admitted)
    }

    fn admitted(d: &Decisions<()>) -> Vec<u32> {
        d.admitted.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn requests_are_admitted_while_their_reservations_fit() {
        let mut g = gate(150);
        assert!(ask(&mut g, "", 100, 0).1);
        assert!(ask(&mut g, "", 50, 0).1);
        let (id, now) = ask(&mut g, "", 1, 0);
        assert!(!now);
        assert_eq!(g.standing(id, 0), Standing::Waits { until: 1_000 });
        assert_eq!((g.reserved(), g.free(), g.waiting()), (150, 0, 1));
        assert_eq!(
            g.ask("", 151, (), 0).map(|_| ()),
            Err(Refusal::NeverFits {
                asked: 151,
                budget: 150
            })
        );
    }

    #[test]
    fn a_freed_reservation_admits_every_waiter_that_now_fits_in_order() {
        let mut g = gate(100);
        let (big, _) = ask(&mut g, "", 100, 0);
        let waiters: Vec<u32> = [30, 30, 30, 20]
            .iter()
            .map(|&t| ask(&mut g, "", t, 0).0)
            .collect();
        g.release(big);
        let d = g.settle(1);
        assert_eq!(admitted(&d), waiters[..3].to_vec());
        // The fourth waits for room (10 free): it is first in line now.
        assert_eq!(g.waiting(), 1);
        assert_eq!(g.standing(waiters[3], 1), Standing::Waits { until: 1_000 });
    }

    #[test]
    fn new_requests_do_not_overtake_a_waiter() {
        let mut g = gate(100);
        let (a, _) = ask(&mut g, "", 60, 0);
        let (long, now) = ask(&mut g, "", 80, 0);
        assert!(!now);
        // 40 are free, but the long pass came first: a short one waits.
        let (short, now) = ask(&mut g, "", 10, 1);
        assert!(!now, "a new request overtook a waiter");
        g.release(a);
        assert_eq!(admitted(&g.settle(2)), vec![long, short]);
    }

    #[test]
    fn a_waiter_out_of_time_is_refused_and_leaves_the_queue() {
        let mut g = gate(100);
        let (a, _) = ask(&mut g, "", 100, 0);
        let (late, _) = ask(&mut g, "", 50, 0);
        let (next, _) = ask(&mut g, "", 50, 500);
        let d = g.settle(1_000);
        assert_eq!(d.refused, vec![(late, Refusal::TimedOut)]);
        assert_eq!(g.standing(late, 1_000), Standing::Unknown);
        // The freed room goes to a live waiter, not to the one that left.
        g.release(a);
        assert_eq!(admitted(&g.settle(1_001)), vec![next]);
        assert_eq!(g.waiting(), 0);
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_the_queue() {
        let mut g = gate(100);
        let (a, _) = ask(&mut g, "", 100, 0);
        let (gone, _) = ask(&mut g, "", 100, 0);
        let (next, _) = ask(&mut g, "", 100, 0);
        assert!(g.release(gone));
        g.release(a);
        assert_eq!(admitted(&g.settle(1)), vec![next]);
        assert!(!g.release(gone), "released twice");
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut g = gate(100);
        ask(&mut g, "", 100, 0);
        for _ in 0..4 {
            ask(&mut g, "", 10, 0);
        }
        assert_eq!(
            g.ask("", 10, (), 0).map(|(id, _)| id),
            Err(Refusal::QueueFull)
        );
        assert_eq!(g.waiting(), 4);
    }

    #[test]
    fn a_full_queue_makes_room_for_a_scope_that_waits_less() {
        let mut g = gate(100);
        ask(&mut g, "a", 100, 0);
        let a: Vec<u32> = (0..4).map(|_| ask(&mut g, "a", 10, 0).0).collect();
        // Scope b waits for nothing yet: a's newest waiter gives way.
        let (b, d) = g.ask("b", 10, (), 1).expect("queued");
        assert_eq!(d.refused, vec![(a[3], Refusal::QueueFull)]);
        assert!(matches!(g.standing(b, 1), Standing::Waits { .. }));
        // Then a has 3 waiting and b 1: another b takes a's place again,
        let (_, d) = g.ask("b", 10, (), 1).expect("queued");
        assert_eq!(d.refused, vec![(a[2], Refusal::QueueFull)]);
        // but with 2 and 2 a third b is refused.
        assert_eq!(g.ask("b", 10, (), 1).map(|_| ()), Err(Refusal::QueueFull));
    }

    #[test]
    fn a_scope_that_holds_passes_is_bounded_while_another_waits() {
        let mut g = gate(2048);
        // Key a's two long chats fill the budget: nobody else asked yet.
        let (a1, _) = ask(&mut g, "a", 1024, 0);
        let (a2, _) = ask(&mut g, "a", 1024, 0);
        // b waits, then a asks for a third: a holds more than its share
        // (1024 of two scopes), so b, which holds nothing, goes first.
        let (b, _) = ask(&mut g, "b", 1024, 1);
        let (a3, _) = ask(&mut g, "a", 1024, 2);
        g.release(a1);
        assert_eq!(admitted(&g.settle(3)), vec![b]);
        assert_eq!(g.standing(a3, 3), Standing::Waits { until: 1_002 });
        g.release(a2);
        assert_eq!(admitted(&g.settle(4)), vec![a3]);
    }

    #[test]
    fn a_scope_over_its_share_is_passed_over_and_keeps_its_place() {
        let mut g = gate(300);
        let (a1, _) = ask(&mut g, "a", 100, 0);
        let (b1, _) = ask(&mut g, "b", 200, 0);
        let (a2, _) = ask(&mut g, "a", 150, 1);
        let (c, _) = ask(&mut g, "c", 100, 2);
        g.release(b1);
        // a and c share 300, 150 each: a holds 100 and asks 150 more, so
        // c, behind it, goes first; then a waits alone, first in line,
        // for room (100 free).
        assert_eq!(admitted(&g.settle(3)), vec![c]);
        assert!(matches!(g.standing(a2, 3), Standing::Waits { .. }));
        // d holds nothing, a is over its share again: d goes in at once.
        assert!(ask(&mut g, "d", 100, 4).1);
        // a holding nothing is within its share, and first in line.
        g.release(a1);
        assert!(g.settle(5).admitted.is_empty(), "150 do not fit in 100");
        g.release(c);
        assert_eq!(admitted(&g.settle(6)), vec![a2]);
    }

    #[test]
    fn one_admission_may_put_another_within_its_share() {
        let mut g = gate(300);
        let (_a1, _) = ask(&mut g, "a", 100, 0);
        let (b1, _) = ask(&mut g, "b", 200, 0);
        let (a2, _) = ask(&mut g, "a", 100, 1);
        let (c, _) = ask(&mut g, "c", 100, 2);
        g.release(b1);
        // a is over its share while c waits; once c is in, a waits alone.
        assert_eq!(admitted(&g.settle(3)), vec![c, a2]);
    }

    #[test]
    fn a_scope_alone_may_fill_the_budget() {
        let mut g = gate(300);
        for _ in 0..3 {
            assert!(ask(&mut g, "a", 100, 0).1);
        }
        // Every caller without keys shares one scope: no share applies.
        let mut g = gate(300);
        assert!(ask(&mut g, "", 200, 0).1);
        assert!(ask(&mut g, "", 100, 0).1);
    }

    #[test]
    fn a_pass_not_called_for_its_lease_is_reclaimed_once_timers_ran() {
        let mut g = gate(100);
        let (dead, _) = ask(&mut g, "", 60, 0);
        let (live, _) = ask(&mut g, "", 40, 0);
        g.touch(live, 15_000);
        // Time alone proves nothing: no timer ran, no caller could call.
        assert!(g.settle(20_000).reclaimed.is_empty());
        // A timer on time at 20 s: the dead one (last called at 0) goes,
        // waiters or not; the live one's lease runs to 25 s.
        g.timer(20_000, 0);
        assert_eq!(g.settle(20_000).reclaimed, vec![dead]);
        assert!(!g.touch(dead, 20_001), "a reclaimed pass is not renewed");
        assert_eq!(g.standing(live, 20_001), Standing::Holds);
        assert_eq!(g.reserved(), 40);
    }

    #[test]
    fn a_frozen_thread_gives_every_pass_a_full_lease_again() {
        let mut g = gate(100);
        let (a, _) = ask(&mut g, "", 50, 0);
        let (b, _) = ask(&mut g, "", 50, 0);
        // The thread ran a long step: the first timer after it is 25 s
        // late, and whatever its callers queued is not heard yet.
        g.timer(30_000, 25_000);
        assert!(g.settle(30_000).reclaimed.is_empty());
        // a's caller touches at once; b's never does: b goes a full lease
        // after the thaw, not before.
        g.touch(a, 30_001);
        g.timer(39_000, 0);
        assert!(g.settle(39_000).reclaimed.is_empty());
        g.timer(40_000, 0);
        assert_eq!(g.settle(40_000).reclaimed, vec![b]);
        assert_eq!(g.standing(a, 40_000), Standing::Holds);
        // A timer a little late (within the grace) is still on time.
        g.timer(40_500 + 1_000, 1_000);
        assert_eq!(g.settle(41_500).reclaimed, vec![a]);
    }

    #[test]
    fn a_waiter_is_woken_when_a_lease_can_run_out() {
        let mut g = gate(100);
        let (p, _) = ask(&mut g, "", 100, 0);
        let (w, _) = ask(&mut g, "", 10, 9_500);
        // Its deadline is 10.5 s; the pass's lease can end at 10 s, and
        // the waiter's wake-up then is the evidence.
        assert_eq!(g.standing(w, 9_500), Standing::Waits { until: 10_000 });
        g.timer(10_000, 0);
        let d = g.settle(10_000);
        assert_eq!((admitted(&d), d.reclaimed), (vec![w], vec![p]));
        // A lease that may have run out already: woken at once.
        let mut g = gate(100);
        ask(&mut g, "", 100, 0);
        let (w, _) = ask(&mut g, "", 10, 20_000);
        assert_eq!(g.standing(w, 20_000), Standing::Waits { until: 20_001 });
    }

    #[test]
    fn a_pass_in_use_is_never_reclaimed() {
        let mut g = gate(100);
        let (p, _) = ask(&mut g, "", 100, 0);
        // Waiters come and time out, timers run, the pass is touched every
        // 0.9 s, for longer than its lease.
        for t in (1..30).map(|s| s * 900) {
            assert!(g.touch(p, t));
            g.timer(t, 0);
            if g.waiting() == 0 {
                ask(&mut g, "", 10, t);
            }
            assert!(g.settle(t).reclaimed.is_empty());
        }
        assert_eq!(g.standing(p, 27_000), Standing::Holds);
    }

    #[test]
    fn ids_start_where_the_entry_says_and_are_never_reused() {
        let mut g: Gate<()> = Gate::new(limits(100), 41);
        let (a, _) = ask(&mut g, "", 10, 0);
        g.release(a);
        let (b, _) = ask(&mut g, "", 10, 0);
        assert_eq!((a, b, g.next_id()), (41, 42, 43));
        assert!(g.ask("", 101, (), 0).is_err());
        assert_eq!(g.next_id(), 43, "a refusal takes no id");
        let mut g: Gate<()> = Gate::new(limits(100), u32::MAX);
        assert_eq!(ask(&mut g, "", 10, 0).0, u32::MAX);
        assert_eq!(ask(&mut g, "", 10, 0).0, 1, "past the end, never 0");
        assert_eq!(Gate::<()>::new(limits(1), 0).next_id(), 1);
    }
}
