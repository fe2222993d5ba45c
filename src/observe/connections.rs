//! Which connections the HTTP listener keeps, so that it stays answerable
//! when clients misbehave: a total cap, a cap per client address, and
//! eviction instead of queueing.
//!
//! A listener that stops accepting at its cap leaves probes waiting in the
//! kernel's accept queue behind whatever holds the slots: 200 half-sent
//! requests or 100 idle keep-alive connections were enough to fail
//! `/healthz` probes and stall `/metrics` for ~10 s (issue 22). Here every
//! connection is accepted, and when a cap is reached the connection that
//! waited longest *without a request in progress* is closed to make room:
//! a half-sent request line, an idle keep-alive connection or a client that
//! stopped reading its answer loses its slot; a request being answered (a
//! scrape, a CPU profile) never does. Only when every connection the cap
//! counts is mid-request is the new one refused.
//!
//! Which connection goes: at the per-peer cap, the peer's own oldest idle
//! one (a client that floods only pushes out itself); at the total cap,
//! the oldest idle one of the peer holding the most, so a flood spread over
//! many addresses cannot push out a scraper's one connection either.
//!
//! This module decides; [`super::server`] closes what it says.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Which cap a decision was made at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cap {
    /// The client address already holds its share.
    Peer,
    /// The listener holds all it serves.
    Total,
}

/// What became of a new connection.
pub(crate) enum Admission {
    /// Served. `made_room` names the cap at which an idle connection was
    /// closed for it, if one was.
    Admitted { ticket: Ticket, made_room: Option<Cap> },
    /// Not served: every connection counted by the cap is mid-request.
    Refused(Cap),
}

/// The open connections of one listener.
pub(crate) struct Ledger {
    max_total: usize,
    max_per_peer: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// In the order they were accepted: the first is the oldest.
    open: Vec<Arc<Entry>>,
    next_id: u64,
}

struct Entry {
    id: u64,
    peer: IpAddr,
    /// Requests being answered (hyper's HTTP/1 answers one at a time).
    requests: AtomicUsize,
    /// Told when the ledger closes this connection to make room.
    evict: Notify,
}

impl Entry {
    fn idle(&self) -> bool {
        self.requests.load(Ordering::Acquire) == 0
    }
}

impl Ledger {
    pub(crate) fn new(max_total: usize, max_per_peer: usize) -> Arc<Self> {
        Arc::new(Ledger {
            max_total: max_total.max(1),
            max_per_peer: max_per_peer.max(1),
            state: Mutex::new(State::default()),
        })
    }

    /// Decides on a connection just accepted from `peer`; an evicted
    /// connection is told through its [`Ticket::evicted`].
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Admission {
        // A poisoned lock means a panic between two Vec operations; the
        // list is still a list of connections.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let from_peer = state.open.iter().filter(|e| e.peer == peer).count();
        let made_room = if from_peer >= self.max_per_peer {
            match state.open.iter().position(|e| e.peer == peer && e.idle()) {
                Some(victim) => Some((victim, Cap::Peer)),
                None => return Admission::Refused(Cap::Peer),
            }
        } else if state.open.len() >= self.max_total {
            let mut held: HashMap<IpAddr, usize> = HashMap::new();
            for e in &state.open {
                *held.entry(e.peer).or_default() += 1;
            }
            // The most connections first, then the oldest.
            let victim = state
                .open
                .iter()
                .enumerate()
                .filter(|(_, e)| e.idle())
                .max_by_key(|(i, e)| (held[&e.peer], std::cmp::Reverse(*i)))
                .map(|(i, _)| i);
            match victim {
                Some(victim) => Some((victim, Cap::Total)),
                None => return Admission::Refused(Cap::Total),
            }
        } else {
            None
        };
        if let Some((victim, _)) = made_room {
            state.open.remove(victim).evict.notify_one();
        }
        let entry = Arc::new(Entry {
            id: state.next_id,
            peer,
            requests: AtomicUsize::new(0),
            evict: Notify::new(),
        });
        state.next_id += 1;
        state.open.push(entry.clone());
        Admission::Admitted {
            ticket: Ticket {
                ledger: self.clone(),
                entry,
            },
            made_room: made_room.map(|(_, cap)| cap),
        }
    }

    /// Connections counted now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).open.len()
    }
}

/// One admitted connection's place in the ledger; dropping it frees the place.
pub(crate) struct Ticket {
    ledger: Arc<Ledger>,
    entry: Arc<Entry>,
}

impl Ticket {
    /// Resolves when the ledger closed this connection to make room.
    pub(crate) async fn evicted(&self) {
        self.entry.evict.notified().await
    }

    /// Marks a request in progress until the guard is dropped: the
    /// connection cannot be evicted meanwhile.
    pub(crate) fn request(&self) -> RequestInProgress {
        self.entry.requests.fetch_add(1, Ordering::AcqRel);
        RequestInProgress {
            entry: self.entry.clone(),
        }
    }

    /// A request is being answered on this connection.
    pub(crate) fn in_request(&self) -> bool {
        !self.entry.idle()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.ledger.state.lock().unwrap_or_else(|p| p.into_inner());
        // Absent if it was evicted: its place was given away already.
        if let Some(i) = state.open.iter().position(|e| e.id == self.entry.id) {
            state.open.remove(i);
        }
    }
}

/// See [`Ticket::request`].
pub(crate) struct RequestInProgress {
    entry: Arc<Entry>,
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.entry.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn admitted(a: Admission) -> (Ticket, Option<Cap>) {
        match a {
            Admission::Admitted { ticket, made_room } => (ticket, made_room),
            Admission::Refused(cap) => panic!("refused at {cap:?}"),
        }
    }

    /// Whether the ticket's connection has been told to close.
    fn was_evicted(t: &Ticket) -> bool {
        let fut = t.evicted();
        let mut fut = std::pin::pin!(fut);
        matches!(
            fut.as_mut().poll(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(())
        )
    }

    /// A peer at its cap pushes out its own oldest idle connection, never
    /// another peer's, and never one that is mid-request.
    #[test]
    fn peer_cap_evicts_the_peers_oldest_idle_connection() {
        let ledger = Ledger::new(10, 3);
        let (other, _) = admitted(ledger.admit(ip(2)));
        let (first, _) = admitted(ledger.admit(ip(1)));
        let busy = first.request();
        let (second, _) = admitted(ledger.admit(ip(1)));
        let (third, _) = admitted(ledger.admit(ip(1)));
        let (fourth, made_room) = admitted(ledger.admit(ip(1)));
        assert_eq!(made_room, Some(Cap::Peer));
        assert!(was_evicted(&second), "the oldest idle one goes");
        assert!(!was_evicted(&first), "mid-request: kept");
        assert!(!was_evicted(&other) && !was_evicted(&third) && !was_evicted(&fourth));
        assert_eq!(ledger.open(), 4);
        drop(busy);
        drop(second);
        assert_eq!(ledger.open(), 4, "an evicted ticket's place was already given away");
    }

    /// When all of a peer's connections are mid-request, its next one is
    /// refused and nothing is evicted.
    #[test]
    fn peer_cap_refuses_when_every_connection_is_busy() {
        let ledger = Ledger::new(10, 2);
        let (a, _) = admitted(ledger.admit(ip(1)));
        let (b, _) = admitted(ledger.admit(ip(1)));
        let (_ra, _rb) = (a.request(), b.request());
        assert!(matches!(ledger.admit(ip(1)), Admission::Refused(Cap::Peer)));
        assert!(!was_evicted(&a) && !was_evicted(&b));
        let (_c, made_room) = admitted(ledger.admit(ip(2)));
        assert_eq!(made_room, None, "another peer is still welcome");
    }

    /// At the total cap the oldest idle connection of the peer holding the
    /// most goes, so a lone scraper keeps its connection.
    #[test]
    fn total_cap_evicts_from_the_biggest_peer() {
        let ledger = Ledger::new(4, 3);
        let (scraper, _) = admitted(ledger.admit(ip(9)));
        let (f1, _) = admitted(ledger.admit(ip(1)));
        let (f2, _) = admitted(ledger.admit(ip(1)));
        let (g1, _) = admitted(ledger.admit(ip(2)));
        let (_new, made_room) = admitted(ledger.admit(ip(3)));
        assert_eq!(made_room, Some(Cap::Total));
        assert!(was_evicted(&f1));
        assert!(!was_evicted(&scraper) && !was_evicted(&f2) && !was_evicted(&g1));
        assert_eq!(ledger.open(), 4);
    }

    /// At the total cap with every connection mid-request, the new one is refused.
    #[test]
    fn total_cap_refuses_when_every_connection_is_busy() {
        let ledger = Ledger::new(2, 2);
        let (a, _) = admitted(ledger.admit(ip(1)));
        let (b, _) = admitted(ledger.admit(ip(2)));
        let _busy = (a.request(), b.request());
        assert!(matches!(ledger.admit(ip(3)), Admission::Refused(Cap::Total)));
        drop(_busy);
        let (_c, made_room) = admitted(ledger.admit(ip(3)));
        assert_eq!(made_room, Some(Cap::Total), "idle again: evictable");
    }

    /// A closed connection frees its place.
    #[test]
    fn dropping_a_ticket_frees_its_place() {
        let ledger = Ledger::new(1, 1);
        let (a, _) = admitted(ledger.admit(ip(1)));
        assert!(a.request().entry.requests.load(Ordering::Acquire) == 1);
        assert!(!a.in_request(), "the guard was dropped");
        drop(a);
        assert_eq!(ledger.open(), 0);
        let (_b, made_room) = admitted(ledger.admit(ip(2)));
        assert_eq!(made_room, None);
    }
}
