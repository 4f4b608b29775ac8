//! Messages between shards: a keyed step or state read whose key another
//! shard owns is sent to that owner, run there, and answered.
//!
//! Every key belongs to exactly one shard, `state::owner_shard(key, shards)`.
//! A request that arrives at another shard is decoded and run there up to
//! its keyed step; the step's inputs travel to the owner as a
//! [`KeyedOp`] with owned values, the owner applies it to its own state
//! (synchronously, between two of its own requests) and sends back a
//! [`KeyedReply`]. The originating connection waits for that reply before it
//! decodes its next request, so responses keep their order per connection.
//!
//! The forwarded path allocates (owned keys and values); the local path does
//! not. Messages travel over glommio's shared channels rather than crossbeam:
//! a shared channel wakes the receiving executor through its event fd, so a
//! forwarded request costs one cross-core wake-up, not a polling interval.
//!
//! # The mesh
//!
//! [`Peers::mesh`] builds one bounded channel per ordered pair of shards on
//! the main thread. Each shard connects its ends into a `Mesh` (its
//! senders and the source of forward generations) and runs one `inbox`
//! task per peer. A connection waiting for its owner parks on its
//! `ForwardSlot`; the inbox that receives the reply fills the slot and
//! wakes it. A reply carries the generation of the forward it answers, so a
//! late reply never lands in a slot reused by a newer forward.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::{Poll, Waker};

use glommio::channels::local_channel::LocalReceiver;
use glommio::channels::shared_channel::{
    ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

use crate::operator::run_on_owner;
use crate::row::{ArrayRef, Val};
use crate::state::ShardState;

/// An owned value, to cross threads.
#[derive(Debug, Clone, PartialEq)]
pub enum Owned {
    /// SQL NULL.
    Null,
    /// Boolean.
    Bool(bool),
    /// 64-bit integer.
    Int(i64),
    /// 64-bit float.
    Float(f64),
    /// Text.
    Str(String),
    /// An `array<float64>` vector.
    F64s(Vec<f64>),
    /// An `array<float32>` vector.
    F32s(Vec<f32>),
    /// An `array<int64>` vector.
    I64s(Vec<i64>),
}

impl Owned {
    /// Copies a borrowed value.
    pub fn from_val(v: Val<'_>) -> Owned {
        match v {
            Val::Null => Owned::Null,
            Val::Bool(b) => Owned::Bool(b),
            Val::Int(i) => Owned::Int(i),
            Val::Float(f) => Owned::Float(f),
            Val::Str(s) => Owned::Str(s.to_string()),
            Val::Array(ArrayRef::F64(a)) => Owned::F64s(a.to_vec()),
            Val::Array(ArrayRef::F32(a)) => Owned::F32s(a.to_vec()),
            Val::Array(ArrayRef::I64(a)) => Owned::I64s(a.to_vec()),
        }
    }

    /// Borrows the value.
    pub fn as_val(&self) -> Val<'_> {
        match self {
            Owned::Null => Val::Null,
            Owned::Bool(b) => Val::Bool(*b),
            Owned::Int(i) => Val::Int(*i),
            Owned::Float(f) => Val::Float(*f),
            Owned::Str(s) => Val::Str(s),
            Owned::F64s(a) => Val::Array(ArrayRef::F64(a)),
            Owned::F32s(a) => Val::Array(ArrayRef::F32(a)),
            Owned::I64s(a) => Val::Array(ArrayRef::I64(a)),
        }
    }
}

/// A keyed operation to run on the key's owner shard. Kind-agnostic: the
/// table's kind decides what the inputs mean.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyedOp {
    /// Update a keyed table with one request's inputs (in the step's input
    /// order: an aggregate's per-output inputs, a `changed` step's value).
    Update {
        /// State table id.
        table: usize,
        /// The key.
        key: Owned,
        /// The step's inputs.
        inputs: Vec<Owned>,
        /// Request time (unix ms), for `first_seen()`.
        now_ms: i64,
    },
    /// Set columns of a declared table's row (`None`: keep the column).
    Upsert {
        /// State table id.
        table: usize,
        /// The key.
        key: Owned,
        /// Per table column: the new value, or `None` to keep it.
        set: Vec<Option<Owned>>,
    },
    /// Delete a declared table's row.
    Delete {
        /// State table id.
        table: usize,
        /// The key.
        key: Owned,
    },
    /// Read a key's state without changing it.
    Read {
        /// State table id.
        table: usize,
        /// The key.
        key: Owned,
    },
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyedReply {
    /// The step's outputs after the update, or a read's values (`None`: the
    /// key has no state).
    Values(Option<Vec<Owned>>),
    /// The op failed on the owner; the request is answered with this
    /// status and message.
    Failed(u16, String),
}

/// One message between shards.
#[derive(Debug)]
pub enum ShardMessage {
    /// Run `op` and reply to shard `from`, waking its connection `slot`.
    Request {
        /// Sending shard.
        from: usize,
        /// Connection slot on the sending shard.
        slot: usize,
        /// Generation of that slot's forward, to drop stale replies.
        generation: u64,
        /// What to run.
        op: KeyedOp,
    },
    /// Sequencer (shard 0) to every other shard: apply this replicated
    /// write now, between two requests, and answer [`ShardMessage::Applied`].
    Apply(KeyedOp),
    /// A shard applied the replicated write the sequencer sent last.
    Applied,
    /// The answer to a request.
    Reply {
        /// Connection slot on the receiving shard.
        slot: usize,
        /// Generation the request carried.
        generation: u64,
        /// The result.
        reply: KeyedReply,
    },
}

/// The shard's ends of the channels to every other shard: `senders[j]` goes
/// to shard `j`, `receivers` come from every other shard (`None` at the
/// shard's own index).
pub struct Peers {
    /// Senders to shard j.
    pub senders: Vec<Option<SharedSender<ShardMessage>>>,
    /// Receivers from every other shard.
    pub receivers: Vec<SharedReceiver<ShardMessage>>,
}

impl Peers {
    /// The full mesh of channels for `shards` shards. Each channel holds
    /// `capacity` messages; a connection has at most one forward in flight,
    /// so `capacity` ≥ connections per shard makes a full channel, and so a
    /// cycle of shards blocked on each other, impossible.
    pub fn mesh(shards: usize, capacity: usize) -> Vec<Peers> {
        let mut peers: Vec<Peers> = (0..shards)
            .map(|_| Peers {
                senders: (0..shards).map(|_| None).collect(),
                receivers: Vec::new(),
            })
            .collect();
        for from in 0..shards {
            for to in 0..shards {
                if from != to {
                    let (tx, rx) = glommio::channels::shared_channel::new_bounded(capacity);
                    peers[from].senders[to] = Some(tx);
                    peers[to].receivers.push(rx);
                }
            }
        }
        peers
    }
}

/// The reply slot of a connection with a forward in flight.
#[derive(Default)]
pub(crate) struct ForwardSlot {
    /// The generation of the forward in flight: unique on the shard, so a
    /// late reply can never be taken for a newer forward of a connection
    /// that reused the slot.
    generation: Cell<u64>,
    reply: RefCell<Option<KeyedReply>>,
    waker: RefCell<Option<Waker>>,
}

impl ForwardSlot {
    /// Hands `reply` to the waiting connection if it answers the forward in
    /// flight; a stale reply is dropped.
    pub(crate) fn deliver(&self, generation: u64, reply: KeyedReply) {
        if self.generation.get() == generation {
            *self.reply.borrow_mut() = Some(reply);
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }
}

/// One shard's connected ends of the mesh.
pub(crate) struct Mesh {
    /// This shard's index.
    index: usize,
    /// Senders to the other shards (`None` at our own index).
    senders: Vec<Option<ConnectedSender<ShardMessage>>>,
    /// Forwards sent so far: the source of forward generations.
    forwards: Cell<u64>,
    /// Shard 0 only: replicated writes waiting for the sequencer.
    writes: RefCell<VecDeque<Write>>,
    sequencer: RefCell<Option<Waker>>,
    /// `Applied` answers the sequencer has received for its current write.
    applied: Cell<usize>,
}

/// The shard that orders replicated writes.
pub(crate) const SEQUENCER: usize = 0;

/// A replicated write waiting for the sequencer: who to answer, and what.
struct Write {
    from: usize,
    slot: usize,
    generation: u64,
    op: KeyedOp,
}

impl Mesh {
    /// Connects this shard's senders. The receivers connect in their own
    /// tasks so that every shard's senders can connect meanwhile, whatever
    /// order the shards start in; each one arrives on the returned channel
    /// once connected, ready for an `inbox`.
    pub(crate) async fn connect(
        index: usize,
        peers: Peers,
    ) -> (Mesh, LocalReceiver<ConnectedReceiver<ShardMessage>>) {
        let (incoming_tx, incoming_rx) = glommio::channels::local_channel::new_unbounded();
        let incoming_tx = std::rc::Rc::new(incoming_tx);
        for rx in peers.receivers {
            let incoming_tx = incoming_tx.clone();
            glommio::spawn_local(async move {
                let _ = incoming_tx.try_send(rx.connect().await);
            })
            .detach();
        }
        drop(incoming_tx);
        let mut senders = Vec::with_capacity(peers.senders.len());
        for tx in peers.senders {
            senders.push(match tx {
                Some(tx) => Some(tx.connect().await),
                None => None,
            });
        }
        let mesh = Mesh {
            index,
            senders,
            forwards: Cell::new(0),
            writes: RefCell::new(VecDeque::new()),
            sequencer: RefCell::new(None),
            applied: Cell::new(0),
        };
        (mesh, incoming_rx)
    }

    /// One round trip to the owner shard: sends `op` on behalf of the
    /// connection in slot `slot` and waits on its [`ForwardSlot`] for the
    /// reply.
    pub(crate) async fn round_trip(
        &self,
        slot: usize,
        waiting: &ForwardSlot,
        owner: usize,
        op: KeyedOp,
    ) -> KeyedReply {
        let generation = self.forwards.get() + 1;
        self.forwards.set(generation);
        waiting.generation.set(generation);
        waiting.reply.borrow_mut().take();
        if owner == self.index {
            // A replicated write on the sequencer itself: queue it like a
            // peer's; the sequencer answers through `deliver`.
            self.enqueue(Write {
                from: self.index,
                slot,
                generation,
                op,
            });
            return wait(waiting).await;
        }
        let Some(Some(tx)) = self.senders.get(owner) else {
            return KeyedReply::Failed(503, format!("shard {owner} is not reachable"));
        };
        let message = ShardMessage::Request {
            from: self.index,
            slot,
            generation,
            op,
        };
        if tx.send(message).await.is_err() {
            return KeyedReply::Failed(503, format!("shard {owner} has stopped"));
        }
        wait(waiting).await
    }

    fn enqueue(&self, write: Write) {
        self.writes.borrow_mut().push_back(write);
        if let Some(w) = self.sequencer.borrow_mut().take() {
            w.wake();
        }
    }
}

async fn wait(waiting: &ForwardSlot) -> KeyedReply {
    std::future::poll_fn(|cx| match waiting.reply.borrow_mut().take() {
        Some(reply) => Poll::Ready(reply),
        None => {
            *waiting.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}

/// The replicated-write sequencer, run on shard [`SEQUENCER`] only.
///
/// Every upsert or delete on a replicated table, from any shard, is
/// forwarded here and queued in arrival order. The sequencer takes one
/// write at a time: applies it to its own state (a refused write, such as
/// a wrong type, stops here and changes nothing anywhere), sends it as
/// [`ShardMessage::Apply`] to every other shard, waits until each has
/// answered [`ShardMessage::Applied`] (each applies it in its inbox,
/// between two of its own requests), and only then answers the request.
/// One write in flight at a time and FIFO channels give every shard the
/// same order of writes, and a reply means every shard's lookups already
/// see the new row. The cost is one round trip to every shard per write
/// (control traffic), none on lookups.
pub(crate) async fn sequencer(
    mesh: &Mesh,
    state: &RefCell<ShardState>,
    deliver: impl Fn(usize, u64, KeyedReply),
) {
    loop {
        let write = std::future::poll_fn(|cx| match mesh.writes.borrow_mut().pop_front() {
            Some(w) => Poll::Ready(w),
            None => {
                *mesh.sequencer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let reply = run_on_owner(&mut state.borrow_mut(), &write.op);
        if !matches!(reply, KeyedReply::Failed(..)) {
            mesh.applied.set(0);
            let mut expected = 0;
            for tx in mesh.senders.iter().flatten() {
                if tx.send(ShardMessage::Apply(write.op.clone())).await.is_ok() {
                    expected += 1;
                }
            }
            std::future::poll_fn(|cx| {
                if mesh.applied.get() >= expected {
                    Poll::Ready(())
                } else {
                    *mesh.sequencer.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
        }
        if write.from == mesh.index {
            deliver(write.slot, write.generation, reply);
        } else if let Some(Some(tx)) = mesh.senders.get(write.from) {
            let _ = tx
                .send(ShardMessage::Reply {
                    slot: write.slot,
                    generation: write.generation,
                    reply,
                })
                .await;
        }
    }
}

/// Serves one peer's messages: runs the operations it forwards to this
/// shard on `state` (synchronously, between two of our own requests) and
/// answers them, and hands the replies to our own forwards to `deliver`
/// (connection slot, generation, reply).
pub(crate) async fn inbox(
    rx: ConnectedReceiver<ShardMessage>,
    mesh: &Mesh,
    state: &RefCell<ShardState>,
    deliver: impl Fn(usize, u64, KeyedReply),
) {
    while let Some(message) = rx.recv().await {
        match message {
            ShardMessage::Request {
                from,
                slot,
                generation,
                op,
            } => {
                if mesh.index == SEQUENCER && state.borrow().replicated_write(&op) {
                    mesh.enqueue(Write {
                        from,
                        slot,
                        generation,
                        op,
                    });
                    continue;
                }
                let reply = run_on_owner(&mut state.borrow_mut(), &op);
                let Some(Some(tx)) = mesh.senders.get(from) else {
                    continue;
                };
                let message = ShardMessage::Reply {
                    slot,
                    generation,
                    reply,
                };
                // Channels hold as many messages as a shard has connections,
                // so this only waits if the origin shard is not reading.
                let _ = tx.send(message).await;
            }
            ShardMessage::Apply(op) => {
                run_on_owner(&mut state.borrow_mut(), &op);
                if let Some(Some(tx)) = mesh.senders.get(SEQUENCER) {
                    let _ = tx.send(ShardMessage::Applied).await;
                }
            }
            ShardMessage::Applied => {
                mesh.applied.set(mesh.applied.get() + 1);
                if let Some(w) = mesh.sequencer.borrow_mut().take() {
                    w.wake();
                }
            }
            ShardMessage::Reply {
                slot,
                generation,
                reply,
            } => deliver(slot, generation, reply),
        }
    }
}
