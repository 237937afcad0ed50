//! A history of what every client did and believed, for the checkers in [`crate::check`].
//!
//! A client *invokes* an operation and later learns its outcome: **ok**, **fail** (it certainly
//! did not happen) or **unknown** (it may or may not have happened: a timeout, a lost ack, a
//! crash). Times come from one monotonic clock started with the [`History`].

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How a lock is held; leader elections are exclusive holds too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One holder at a time.
    Mutex,
    /// At most `n` holders at a time.
    Semaphore(u32),
    /// A reader of a read-write lock: readers share, a writer excludes them.
    Read,
    /// A writer of a read-write lock: excludes every other holder.
    Write,
    /// A leader of an election: one at a time, and its token is the term.
    Leader,
}

/// What a client did. Results (tokens, terms, revisions) come with the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Acquire `lock` (or campaign in an election); the ok result is the token (term).
    Acquire {
        /// Lock or election name.
        lock: String,
        /// How it is held.
        mode: Mode,
    },
    /// Release the hold with `token`; the client stops believing at invocation.
    Release {
        /// Lock or election name.
        lock: String,
        /// The token of the released hold.
        token: u64,
    },
    /// The client learned that its hold with `token` is gone (lost lease, conflict).
    Lost {
        /// Lock or election name.
        lock: String,
        /// The token of the lost hold.
        token: u64,
    },
    /// A write to `resource` fenced by `token`.
    FencedWrite {
        /// The fenced resource.
        resource: String,
        /// The token the write carried.
        token: u64,
    },
    /// An observer of an election starts (or restarts) following it.
    ObserveStart {
        /// Election name.
        election: String,
    },
    /// An observer saw a leader; the ok result is the term.
    Observe {
        /// Election name.
        election: String,
    },
    /// A write of `value` to `key`; the ok result is the revision.
    Write {
        /// Key.
        key: String,
        /// The value written (unique per write, so deliveries can be matched).
        value: String,
    },
    /// A watch starts after revision `after` (0: from the beginning).
    WatchStart {
        /// The watched key or filter.
        key: String,
        /// Deliveries must continue after this revision.
        after: u64,
    },
    /// A watch delivered `value` for `key`; the ok result is the revision.
    Deliver {
        /// Key.
        key: String,
        /// The delivered value.
        value: String,
    },
    /// A watch reported that history it needed is gone; the ok result is the resume revision.
    HistoryGone {
        /// The watched key or filter.
        key: String,
    },
    /// A configuration write; the ok result is the revision.
    ConfigWrite {
        /// The whole configuration as written (unique per write).
        value: String,
        /// Whether the validator accepts it.
        valid: bool,
    },
    /// A reader applied a configuration; the ok result is its revision.
    ConfigApply {
        /// The whole configuration as applied.
        value: String,
    },
    /// A member joins `group` as `member` (unique per join); the ok result is its joined-at
    /// revision.
    Join {
        /// Group name.
        group: String,
        /// Member id.
        member: String,
    },
    /// The member leaves `group`.
    Leave {
        /// Group name.
        group: String,
        /// Member id.
        member: String,
    },
    /// A membership watcher starts (or restarts) following `group`.
    MembersWatch {
        /// Group name.
        group: String,
    },
    /// A membership watcher saw `member` of `group` present or joined (`joined`), or gone.
    MemberSeen {
        /// Group name.
        group: String,
        /// Member id.
        member: String,
        /// Present or joined (`true`), or left (`false`).
        joined: bool,
    },
    /// A fault injected by the nemesis, from invocation (injected) to completion (healed and
    /// the cluster recovered); see [`FaultWindow`].
    Fault {
        /// What was done, e.g. `kill n1`.
        what: String,
    },
    /// The run told its workloads to stop: operations cut short from then on did not fail.
    Stop,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Acquire { lock, mode } => write!(f, "acquire {lock} ({mode:?})"),
            Op::Release { lock, token } => write!(f, "release {lock} token {token}"),
            Op::Lost { lock, token } => write!(f, "lost {lock} token {token}"),
            Op::FencedWrite { resource, token } => {
                write!(f, "fenced write {resource} token {token}")
            }
            Op::ObserveStart { election } => write!(f, "observe-start {election}"),
            Op::Observe { election } => write!(f, "observe {election}"),
            Op::Write { key, value } => write!(f, "write {key}={value}"),
            Op::WatchStart { key, after } => write!(f, "watch {key} after {after}"),
            Op::Deliver { key, value } => write!(f, "deliver {key}={value}"),
            Op::HistoryGone { key } => write!(f, "history-gone {key}"),
            Op::ConfigWrite { value, valid } => {
                let v = if *valid { "valid" } else { "invalid" };
                write!(f, "config-write {v} {value}")
            }
            Op::ConfigApply { value } => write!(f, "config-apply {value}"),
            Op::Join { group, member } => write!(f, "join {group}/{member}"),
            Op::Leave { group, member } => write!(f, "leave {group}/{member}"),
            Op::MembersWatch { group } => write!(f, "members-watch {group}"),
            Op::MemberSeen {
                group,
                member,
                joined,
            } => {
                let what = if *joined { "joined" } else { "left" };
                write!(f, "member-seen {group}/{member} {what}")
            }
            Op::Fault { what } => write!(f, "fault {what}"),
            Op::Stop => write!(f, "stop"),
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not completed yet (counts as unknown for the checkers).
    Pending,
    /// It happened.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// It may or may not have happened.
    Unknown,
}

/// One operation of the history, with invocation and completion times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the history, in invocation order.
    pub id: usize,
    /// Who did it.
    pub client: String,
    /// What was done.
    pub op: Op,
    /// When it was invoked (monotonic, since the history started).
    pub invoked: Duration,
    /// When its outcome was learned.
    pub completed: Option<Duration>,
    /// How it ended.
    pub outcome: Outcome,
    /// The token, term or revision the operation returned.
    pub result: Option<u64>,
    /// Free text: an error message, a reason.
    pub note: String,
}

impl Record {
    /// Whether it certainly happened.
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// Whether it may have happened (ok, unknown or pending).
    pub fn may_have_happened(&self) -> bool {
        self.outcome != Outcome::Fail
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} {} invoked {:.3}s",
            self.id,
            self.client,
            self.op,
            self.invoked.as_secs_f64()
        )?;
        if let Some(c) = self.completed {
            write!(f, ", completed {:.3}s", c.as_secs_f64())?;
        }
        write!(f, ", {:?}", self.outcome)?;
        if let Some(r) = self.result {
            write!(f, " → {r}")?;
        }
        if !self.note.is_empty() {
            write!(f, " ({})", self.note)?;
        }
        Ok(())
    }
}

/// When a fault was in place: from the nemesis' injection until it was healed and the cluster
/// recovered (`None`: never completed, so until the history ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultWindow {
    /// What was done.
    pub what: String,
    /// Injected.
    pub from: Duration,
    /// Healed and recovered.
    pub until: Option<Duration>,
}

impl FaultWindow {
    /// Whether `[from, until]` meets this window or the `grace` after it.
    pub fn touches(&self, from: Duration, until: Duration, grace: Duration) -> bool {
        self.from <= until && self.until.is_none_or(|u| u.saturating_add(grace) >= from)
    }
}

/// Every fault of `records` ([`Op::Fault`]), in injection order.
pub fn fault_windows(records: &[Record]) -> Vec<FaultWindow> {
    records
        .iter()
        .filter_map(|r| match &r.op {
            Op::Fault { what } => Some(FaultWindow {
                what: what.clone(),
                from: r.invoked,
                until: r.completed,
            }),
            _ => None,
        })
        .collect()
}

/// Whether no fault of `faults` was in place during `[from, until]`, nor had healed less than
/// `grace` before `from`.
pub fn fault_free(
    faults: &[FaultWindow],
    from: Duration,
    until: Duration,
    grace: Duration,
) -> bool {
    !faults.iter().any(|f| f.touches(from, until, grace))
}

/// When the run told its workloads to stop ([`Op::Stop`]), else when the history's last
/// operation was invoked or completed.
pub fn end(records: &[Record]) -> Duration {
    records
        .iter()
        .find(|r| r.op == Op::Stop)
        .map(|r| r.invoked)
        .or_else(|| {
            records
                .iter()
                .map(|r| r.completed.unwrap_or(r.invoked))
                .max()
        })
        .unwrap_or_default()
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    records: Mutex<Vec<Record>>,
}

/// A shared, cloneable history: clones append to the same list, from any task or thread.
///
/// ```
/// use kvtk_tests::history::{History, Mode, Op};
///
/// let history = History::new();
/// let op = history.invoke("c1", Op::Acquire { lock: "a".into(), mode: Mode::Mutex });
/// op.ok(Some(7));
/// assert_eq!(history.records()[0].result, Some(7));
/// ```
#[derive(Debug, Clone)]
pub struct History {
    inner: Arc<Inner>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> History {
        History {
            inner: Arc::new(Inner {
                start: Instant::now(),
                records: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Time since the history started.
    pub fn now(&self) -> Duration {
        self.inner.start.elapsed()
    }

    /// Records the invocation of `op` by `client`; complete it through the returned handle.
    /// A handle dropped without an outcome leaves the operation [`Outcome::Unknown`].
    #[must_use = "complete the operation with ok, fail or unknown"]
    pub fn invoke(&self, client: impl Into<String>, op: Op) -> Pending {
        let mut records = self.lock();
        let id = records.len();
        records.push(Record {
            id,
            client: client.into(),
            op,
            invoked: self.now(),
            completed: None,
            outcome: Outcome::Pending,
            result: None,
            note: String::new(),
        });
        Pending {
            history: self.clone(),
            id,
            done: false,
        }
    }

    /// Records an operation that completed at once (an observation, a notification).
    pub fn instant(&self, client: impl Into<String>, op: Op, result: Option<u64>) {
        self.invoke(client, op).ok(result);
    }

    /// Appends a finished record as given (for hand-made histories and imports); its `id` is
    /// replaced by its position.
    pub fn push(&self, mut record: Record) {
        let mut records = self.lock();
        record.id = records.len();
        records.push(record);
    }

    /// A copy of all records, in invocation order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn complete(&self, id: usize, outcome: Outcome, result: Option<u64>, note: String) {
        let now = self.now();
        if let Some(r) = self.lock().get_mut(id) {
            r.completed = Some(now);
            r.outcome = outcome;
            r.result = result;
            r.note = note;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Record>> {
        // A panic while holding the lock leaves the list consistent (pushes are atomic).
        self.inner
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An invoked operation waiting for its outcome.
#[derive(Debug)]
pub struct Pending {
    history: History,
    id: usize,
    done: bool,
}

impl Pending {
    /// It happened, returning `result` (token, term, revision).
    pub fn ok(mut self, result: Option<u64>) {
        self.finish(Outcome::Ok, result, String::new());
    }

    /// It certainly did not happen.
    pub fn fail(mut self, why: impl fmt::Display) {
        self.finish(Outcome::Fail, None, why.to_string());
    }

    /// It may or may not have happened.
    pub fn unknown(mut self, why: impl fmt::Display) {
        self.finish(Outcome::Unknown, None, why.to_string());
    }

    fn finish(&mut self, outcome: Outcome, result: Option<u64>, note: String) {
        self.done = true;
        self.history.complete(self.id, outcome, result, note);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.history
                .complete(self.id, Outcome::Unknown, None, "abandoned".into());
        }
    }
}
