//! Receiver core: authenticate, de-duplicate, place shards, recover with Reed-Solomon, report
//! complete and lost frames. Time is passed in as CLOCK_MONOTONIC nanoseconds.

use crate::config::{BlockLayout, ConfigError, DataPlaneConfig, FrameLayout};
use crate::crypto::{Opener, Replay, ReplayWindow, SessionKey};
use crate::packet::{HEADER_LEN, PacketHeader, ParseError, StreamKind, TAG_LEN};
use reed_solomon_simd::ReedSolomonDecoder;
use std::collections::VecDeque;

/// Why a pushed packet was not used. Every variant is also counted in [`Counters`]; all of
/// them mean "drop the datagram and carry on".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The packet header did not parse.
    #[error("malformed packet: {0}")]
    Malformed(#[from] ParseError),
    /// The packet belongs to another stream kind (given) than this reassembler's.
    #[error("packet of stream {0:?} pushed to another stream's reassembler")]
    WrongStream(StreamKind),
    /// The header's block or shard layout disagrees with the negotiated config (what is named).
    #[error("packet disagrees with the negotiated layout: {0}")]
    Layout(&'static str),
    /// The AEAD tag did not verify.
    #[error("packet failed authentication")]
    AuthFailed,
    /// The sequence number or shard position was seen before.
    #[error("duplicate packet")]
    Duplicate,
    /// The frame was already completed, given up, or is outside the window.
    #[error("packet for a frame that was already given up or fell out of the window")]
    Late,
    /// Reed-Solomon recovery failed for the block.
    #[error("reed-solomon decoder failed")]
    Fec,
}

impl PushError {
    /// True for drops that happen on any healthy network (duplicates, late packets).
    pub fn is_benign(&self) -> bool {
        matches!(self, Self::Duplicate | Self::Late)
    }
}

/// Monotonic counters; read with [`Reassembler::counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets that passed authentication and were new.
    pub received: u64,
    /// Packets seen before (by sequence number or by shard position).
    pub duplicates: u64,
    /// Packets that failed authentication.
    pub auth_failures: u64,
    /// Packets that did not parse or did not match the negotiated layout.
    pub malformed: u64,
    /// Packets for frames already given up, out of the window, or older than the replay window.
    pub late: u64,
    /// Authentic packets not needed: their block or frame was already complete (normally
    /// parity arriving after all data shards).
    pub redundant: u64,
    /// Data shards rebuilt by Reed-Solomon.
    pub recovered_shards: u64,
    /// Blocks that needed the decoder.
    pub recovered_blocks: u64,
    /// Frames handed out complete.
    pub frames_completed: u64,
    /// Frames reported lost (including skipped ones).
    pub frames_lost: u64,
    /// Events dropped because the event queue was full (caller did not poll).
    pub events_dropped: u64,
}

/// A frame handed out by [`Reassembler::poll_event`]; `data` borrows the reassembler's buffer
/// and is valid until the next call on it.
#[derive(Debug, PartialEq, Eq)]
pub struct CompleteFrame<'a> {
    /// Extended (64-bit, unwrapped) frame index.
    pub index: u64,
    /// The stream the frame came on.
    pub kind: StreamKind,
    /// True if the sender flagged the frame as a keyframe.
    pub keyframe: bool,
    /// The access unit, padding stripped.
    pub data: &'a [u8],
    /// Arrival time of the frame's first accepted packet.
    pub first_arrival_ns: u64,
    /// Arrival time of the packet that completed the frame.
    pub last_arrival_ns: u64,
    /// Data shards rebuilt by FEC for this frame.
    pub recovered_shards: u32,
}

/// Output of [`Reassembler::poll_event`].
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A frame arrived whole (possibly after FEC recovery).
    FrameComplete(CompleteFrame<'a>),
    /// The frame can no longer complete (deadline passed or it fell out of the window).
    FrameLost {
        /// Extended index of the lost frame.
        index: u64,
    },
    /// `count` frames starting at `first` were never seen before the window jumped past them.
    FramesSkipped {
        /// Extended index of the first skipped frame.
        first: u64,
        /// How many consecutive frames were skipped.
        count: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    /// Known to exist (a later frame arrived) but no packet yet.
    Waiting,
    Assembling,
    /// Complete, queued for delivery.
    Complete,
    /// Delivered; further packets are counted `redundant`.
    Delivered,
    /// Given up (lost); further packets are counted `late`.
    GivenUp,
}

#[derive(Clone, Copy, Default)]
struct BlockProgress {
    data: u32,
    parity: u32,
    done: bool,
}

struct Slot {
    index: u64,
    state: State,
    deadline: u64,
    first_ns: u64,
    last_ns: u64,
    keyframe: bool,
    layout: FrameLayout,
    blocks_done: u32,
    recovered: u32,
    /// Data shards, contiguous (`data_shards × shard_bytes`), padding included.
    data: Vec<u8>,
    /// Parity shards, contiguous.
    parity: Vec<u8>,
    /// Presence of data shards then parity shards.
    present: Vec<bool>,
    blocks: Vec<BlockProgress>,
}

impl Slot {
    fn new() -> Self {
        Self {
            index: 0,
            state: State::Free,
            deadline: 0,
            first_ns: 0,
            last_ns: 0,
            keyframe: false,
            layout: FrameLayout::default(),
            blocks_done: 0,
            recovered: 0,
            data: Vec::new(),
            parity: Vec::new(),
            present: Vec::new(),
            blocks: Vec::new(),
        }
    }

    /// Sizes the buffers for `layout` (bounded: the layout was derived from a validated length
    /// ≤ max_frame_bytes). Buffers keep their capacity across frames.
    fn start(&mut self, layout: FrameLayout, keyframe: bool, now: u64) {
        let s = layout.shard_bytes as usize;
        let d = layout.data_shards as usize;
        let p = layout.parity_shards() as usize;
        // reserve_exact: never more capacity than the largest frame needs.
        resize_exact(&mut self.data, d * s);
        resize_exact(&mut self.parity, p * s);
        self.present.clear();
        self.present.reserve_exact(d + p);
        self.present.resize(d + p, false);
        self.blocks.clear();
        self.blocks
            .resize(layout.blocks as usize, BlockProgress::default());
        self.layout = layout;
        self.keyframe = keyframe;
        self.first_ns = now;
        self.last_ns = now;
        self.blocks_done = 0;
        self.recovered = 0;
        self.state = State::Assembling;
    }
}

fn resize_exact(v: &mut Vec<u8>, len: usize) {
    if len > v.len() {
        v.reserve_exact(len - v.len());
    }
    v.resize(len, 0);
}

enum Pending {
    Complete { slot: usize, index: u64 },
    Lost { index: u64 },
    Skipped { first: u64, count: u64 },
}

/// Receiver-side state machine for one stream kind.
///
/// Memory is bounded by `frames_in_flight × (max_frame_bytes + parity)` plus a replay bitmap
/// and an event queue of `4 × frames_in_flight + 16` entries, all derived from the config.
pub struct Reassembler {
    cfg: DataPlaneConfig,
    kind: StreamKind,
    opener: Opener,
    replay: ReplayWindow,
    decoder: Option<ReedSolomonDecoder>,
    slots: Vec<Slot>,
    /// Highest extended frame index seen.
    newest: Option<u64>,
    /// Lowest frame index of interest; older ones are ignored as late.
    base: u64,
    /// Index the stream is expected to start at (`None`: adopt the first one seen).
    expect_from: Option<u64>,
    events: VecDeque<Pending>,
    max_events: usize,
    counters: Counters,
    scratch: Vec<u8>,
}

impl Reassembler {
    /// Validates `cfg` and creates the receiver core for one stream kind under `key`.
    pub fn new(
        cfg: DataPlaneConfig,
        key: &SessionKey,
        kind: StreamKind,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let f = cfg.frames_in_flight as usize;
        let window = (cfg.frames_in_flight as usize)
            .saturating_mul(cfg.max_packets_per_frame() as usize)
            .clamp(1024, 1 << 22);
        let max_events = 4 * f + 16;
        Ok(Self {
            cfg,
            kind,
            opener: Opener::new(key, kind),
            replay: ReplayWindow::new(window),
            decoder: None,
            slots: (0..f).map(|_| Slot::new()).collect(),
            newest: None,
            base: 0,
            expect_from: Some(0),
            events: VecDeque::with_capacity(max_events),
            max_events,
            counters: Counters::default(),
            scratch: vec![0; cfg.shard_bytes as usize],
        })
    }

    /// The validated data-plane config this reassembler runs with.
    pub fn config(&self) -> &DataPlaneConfig {
        &self.cfg
    }

    /// Sets the frame index the stream starts at (default 0: a session's first frame).
    /// Frames from there up to the first one received are tracked (and reported lost if they
    /// never arrive). `None` adopts the first frame received as the start, for joining a
    /// stream in progress. Only effective before the first packet.
    pub fn set_expected_first_index(&mut self, first: Option<u64>) {
        if self.newest.is_none() {
            self.expect_from = first;
        }
    }

    /// A snapshot of the monotonic counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Bytes currently held in frame buffers (for checking the memory bound).
    pub fn buffered_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.data.capacity() + s.parity.capacity())
            .sum()
    }

    /// Earliest loss deadline of an incomplete frame: call [`Self::poll_event`] at or after it.
    pub fn next_deadline(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, State::Waiting | State::Assembling))
            .map(|s| s.deadline)
            .min()
    }

    fn slot_of(&self, index: u64) -> usize {
        (index % self.slots.len() as u64) as usize
    }

    fn queue(&mut self, ev: Pending) {
        if self.events.len() >= self.max_events {
            if let Some(Pending::Complete { slot, index }) = self.events.pop_front() {
                // The dropped completion will never be delivered: finish the slot.
                if let Some(s) = self.slots.get_mut(slot)
                    && s.index == index
                    && s.state == State::Complete
                {
                    s.state = State::GivenUp;
                }
                self.counters.frames_lost += 1;
            }
            self.counters.events_dropped += 1;
        }
        self.events.push_back(ev);
    }

    /// Extends a 32-bit wire index to 64 bits, nearest to the newest index seen.
    fn extend_index(&self, wire: u32) -> Option<u64> {
        match self.newest {
            None => Some(u64::from(wire)),
            Some(n) => {
                let delta = i64::from(wire.wrapping_sub(n as u32) as i32);
                n.checked_add_signed(delta)
            }
        }
    }

    /// Feeds one received datagram. `now` is the arrival time in ns.
    pub fn push(&mut self, now: u64, packet: &[u8]) -> Result<(), PushError> {
        let r = self.push_inner(now, packet);
        if let Err(e) = r {
            let c = &mut self.counters;
            match e {
                PushError::Malformed(_) | PushError::WrongStream(_) | PushError::Layout(_) => {
                    c.malformed += 1
                }
                PushError::AuthFailed => c.auth_failures += 1,
                PushError::Duplicate => c.duplicates += 1,
                PushError::Late => c.late += 1,
                PushError::Fec => {}
            }
        }
        r
    }

    fn push_inner(&mut self, now: u64, packet: &[u8]) -> Result<(), PushError> {
        let (hdr, sealed) = PacketHeader::parse(packet)?;
        if hdr.kind != self.kind {
            return Err(PushError::WrongStream(hdr.kind));
        }
        let shard = self.cfg.shard_bytes as usize;
        if sealed.len() != shard + TAG_LEN {
            return Err(PushError::Layout(
                "payload length differs from the shard size",
            ));
        }
        let layout = self
            .cfg
            .layout(hdr.frame_len)
            .ok_or(PushError::Layout("frame longer than max_frame_bytes"))?;
        if u32::from(hdr.block_count) != layout.blocks {
            return Err(PushError::Layout("block count"));
        }
        let blk = layout.block(u32::from(hdr.block_index));
        if u32::from(hdr.data_shards) != blk.data || u32::from(hdr.parity_shards) != blk.parity {
            return Err(PushError::Layout("shard counts of the block"));
        }
        match self.replay.check(hdr.seq) {
            Replay::Fresh => {}
            Replay::Duplicate => return Err(PushError::Duplicate),
            Replay::TooOld => return Err(PushError::Late),
        }
        let index = self.extend_index(hdr.frame_index);
        // Fast path: a new shard of a frame already being assembled is decrypted straight into
        // its place (the region is unused until the shard is marked present, so a failed
        // authentication leaves nothing behind). Everything else goes through `scratch`, and
        // no state changes before authentication succeeded.
        let target = index.and_then(|i| self.in_place_target(i, &hdr, &layout, &blk));
        let opened = match target {
            Some((s, true, off)) => self.slots[s].parity.get_mut(off..off + shard),
            Some((s, false, off)) => self.slots[s].data.get_mut(off..off + shard),
            None => None,
        };
        let in_place = opened.is_some();
        let out = match opened {
            Some(dest) => dest,
            None => &mut self.scratch[..],
        };
        self.opener
            .open(hdr.seq, packet, out)
            .map_err(|_| PushError::AuthFailed)?;
        self.replay.commit(hdr.seq);
        debug_assert_eq!(packet.len(), HEADER_LEN + shard + TAG_LEN);

        let index = index.ok_or(PushError::Late)?;
        let f = self.slots.len() as u64;
        match self.newest {
            None => {
                let from = match self.expect_from {
                    Some(e) if e <= index => e,
                    _ => index,
                };
                self.base = from;
                self.advance(from, index, now);
            }
            Some(n) if index > n => self.advance(n + 1, index, now),
            Some(n) => {
                if n - index >= f {
                    return Err(PushError::Late);
                }
                if index < self.base {
                    // Reordering right after the start: adopt an earlier frame whose slot was
                    // never used.
                    let s = self.slot_of(index);
                    if self.slots[s].state != State::Free {
                        return Err(PushError::Late);
                    }
                    self.base = index;
                    let slot = &mut self.slots[s];
                    slot.index = index;
                    slot.state = State::Waiting;
                    slot.deadline = now.saturating_add(self.cfg.loss_deadline_ns());
                }
            }
        }
        let s = self.slot_of(index);
        let slot = &mut self.slots[s];
        if slot.index != index {
            return Err(PushError::Late);
        }
        match slot.state {
            State::Free | State::GivenUp => return Err(PushError::Late),
            State::Complete | State::Delivered => {
                self.counters.received += 1;
                self.counters.redundant += 1;
                return Ok(());
            }
            State::Waiting => {
                let deadline = slot.deadline;
                slot.start(layout, hdr.is_keyframe(), now);
                slot.deadline = deadline.min(now.saturating_add(self.cfg.loss_deadline_ns()));
            }
            State::Assembling => {
                if slot.layout != layout || slot.keyframe != hdr.is_keyframe() {
                    return Err(PushError::Layout(
                        "frame length or flags differ within a frame",
                    ));
                }
            }
        }
        let b = usize::from(hdr.block_index);
        let Some(progress) = slot.blocks.get(b).copied() else {
            return Err(PushError::Layout("block index"));
        };
        if progress.done {
            self.counters.received += 1;
            self.counters.redundant += 1;
            return Ok(());
        }
        let (pos, parity, j) = shard_position(&layout, &blk, &hdr);
        let dest = if parity {
            slot.parity.get_mut(j * shard..(j + 1) * shard)
        } else {
            slot.data.get_mut(j * shard..(j + 1) * shard)
        };
        let Some(dest) = dest else {
            return Err(PushError::Layout("shard position"));
        };
        if slot.present.get(pos).copied().unwrap_or(true) {
            return Err(PushError::Duplicate);
        }
        self.counters.received += 1;
        if !in_place {
            dest.copy_from_slice(&self.scratch);
        }
        slot.present[pos] = true;
        slot.last_ns = now;
        let pr = &mut slot.blocks[b];
        if hdr.is_parity() {
            pr.parity += 1;
        } else {
            pr.data += 1;
        }
        let (got_data, got_parity) = (pr.data, pr.parity);
        if got_data == blk.data {
            pr.done = true;
        } else if got_data + got_parity >= blk.data {
            pr.done = true;
            let rebuilt = recover_block(&mut self.decoder, slot, blk, shard).map_err(|_| {
                slot.state = State::GivenUp;
                self.counters.frames_lost += 1;
                if self.events.len() < self.max_events {
                    self.events.push_back(Pending::Lost { index });
                }
                PushError::Fec
            })?;
            slot.recovered += rebuilt;
            self.counters.recovered_shards += u64::from(rebuilt);
            self.counters.recovered_blocks += 1;
        }
        if slot.blocks[b].done {
            slot.blocks_done += 1;
            if slot.blocks_done == layout.blocks {
                slot.state = State::Complete;
                self.queue(Pending::Complete { slot: s, index });
            }
        }
        Ok(())
    }

    /// Where an authentic packet for `index` would be stored if its frame is already being
    /// assembled and the shard is new: `(slot, is_parity, byte offset)`. Pure.
    fn in_place_target(
        &self,
        index: u64,
        hdr: &PacketHeader,
        layout: &FrameLayout,
        blk: &BlockLayout,
    ) -> Option<(usize, bool, usize)> {
        let n = self.newest?;
        if index > n || n - index >= self.slots.len() as u64 {
            return None;
        }
        let s = self.slot_of(index);
        let slot = &self.slots[s];
        if slot.index != index
            || slot.state != State::Assembling
            || slot.layout != *layout
            || slot.keyframe != hdr.is_keyframe()
            || slot.blocks.get(usize::from(hdr.block_index))?.done
        {
            return None;
        }
        let (pos, parity, j) = shard_position(layout, blk, hdr);
        if slot.present.get(pos) != Some(&false) {
            return None;
        }
        Some((s, parity, j * layout.shard_bytes as usize))
    }

    /// The newest index moves to `i`; frames `from..=i` are new. Frames falling out of the
    /// window are finished (lost if incomplete), new frames in the window become `Waiting`,
    /// new frames already outside it are reported skipped.
    fn advance(&mut self, from: u64, i: u64, now: u64) {
        let f = self.slots.len() as u64;
        let lo = from.max(i.saturating_sub(f - 1));
        for j in lo..=i {
            let s = self.slot_of(j);
            let slot = &mut self.slots[s];
            if matches!(slot.state, State::Waiting | State::Assembling) {
                let old = slot.index;
                slot.state = State::GivenUp;
                self.counters.frames_lost += 1;
                self.queue(Pending::Lost { index: old });
            }
        }
        if lo > from {
            // Frames from .. lo-1 were never seen and are already out of the window.
            self.counters.frames_lost += lo - from;
            self.queue(Pending::Skipped {
                first: from,
                count: lo - from,
            });
        }
        let deadline = now.saturating_add(self.cfg.loss_deadline_ns());
        for j in lo..=i {
            let s = self.slot_of(j);
            let slot = &mut self.slots[s];
            slot.index = j;
            slot.state = State::Waiting;
            slot.deadline = deadline;
        }
        self.newest = Some(i);
    }

    /// Reports the next event, first giving up frames whose deadline is `<= now`.
    /// Call after pushes and whenever `now` reaches [`Self::next_deadline`].
    pub fn poll_event(&mut self, now: u64) -> Option<Event<'_>> {
        if let Some(n) = self.newest {
            let f = self.slots.len() as u64;
            let lo = n.saturating_sub(f - 1).max(self.base);
            for j in lo..=n {
                let s = self.slot_of(j);
                let slot = &mut self.slots[s];
                if slot.index == j
                    && matches!(slot.state, State::Waiting | State::Assembling)
                    && slot.deadline <= now
                {
                    slot.state = State::GivenUp;
                    self.counters.frames_lost += 1;
                    self.queue(Pending::Lost { index: j });
                }
            }
        }
        match self.events.pop_front()? {
            Pending::Lost { index } => Some(Event::FrameLost { index }),
            Pending::Skipped { first, count } => Some(Event::FramesSkipped { first, count }),
            Pending::Complete { slot, index } => {
                let kind = self.kind;
                let Some(s) = self.slots.get_mut(slot) else {
                    self.counters.frames_lost += 1;
                    return Some(Event::FrameLost { index });
                };
                if s.index != index || s.state != State::Complete {
                    // The slot was reused before the caller polled.
                    self.counters.frames_lost += 1;
                    return Some(Event::FrameLost { index });
                }
                s.state = State::Delivered;
                self.counters.frames_completed += 1;
                let len = s.layout.frame_len as usize;
                Some(Event::FrameComplete(CompleteFrame {
                    index,
                    kind,
                    keyframe: s.keyframe,
                    data: s.data.get(..len).unwrap_or(&[]),
                    first_arrival_ns: s.first_ns,
                    last_arrival_ns: s.last_ns,
                    recovered_shards: s.recovered,
                }))
            }
        }
    }
}

/// `(presence index, is_parity, shard index within the data or parity buffer)` of a packet
/// whose header was checked against `layout`.
fn shard_position(
    layout: &FrameLayout,
    blk: &BlockLayout,
    hdr: &PacketHeader,
) -> (usize, bool, usize) {
    let k = usize::from(hdr.shard_index);
    if hdr.is_parity() {
        let j = blk.first_parity_shard as usize + k.saturating_sub(blk.data as usize);
        (layout.data_shards as usize + j, true, j)
    } else {
        let j = blk.first_data_shard as usize + k;
        (j, false, j)
    }
}

/// Rebuilds the missing data shards of one block from what arrived; returns how many.
fn recover_block(
    decoder: &mut Option<ReedSolomonDecoder>,
    slot: &mut Slot,
    blk: BlockLayout,
    shard: usize,
) -> Result<u32, reed_solomon_simd::Error> {
    let (d, p) = (blk.data as usize, blk.parity as usize);
    let dec = match decoder {
        Some(dec) => {
            dec.reset(d, p, shard)?;
            dec
        }
        none => none.insert(ReedSolomonDecoder::new(d, p, shard)?),
    };
    let n = slot.layout.data_shards as usize;
    let d0 = blk.first_data_shard as usize;
    let p0 = blk.first_parity_shard as usize;
    let mut have = 0;
    for k in 0..d {
        if slot.present[d0 + k] {
            dec.add_original_shard(k, &slot.data[(d0 + k) * shard..(d0 + k + 1) * shard])?;
            have += 1;
        }
    }
    for j in 0..p {
        if have >= d {
            break;
        }
        if slot.present[n + p0 + j] {
            dec.add_recovery_shard(j, &slot.parity[(p0 + j) * shard..(p0 + j + 1) * shard])?;
            have += 1;
        }
    }
    let result = dec.decode()?;
    let mut rebuilt = 0;
    for (k, bytes) in result.restored_original_iter() {
        let g = d0 + k;
        if let Some(dst) = slot.data.get_mut(g * shard..(g + 1) * shard) {
            dst.copy_from_slice(bytes);
            slot.present[g] = true;
            rebuilt += 1;
        }
    }
    Ok(rebuilt)
}
