//! Which free slot a waiting request takes, and which idle slot's KV
//! stream is copied into it: choices over what the slots hold, kept apart
//! from the decode loop so they are tested without a model.

use std::cmp::Reverse;

/// The shortest gain of prefix worth copying one KV stream into another:
/// a copy is one memory copy of the whole stream (about 47 MB for the
/// default model at 2,048 tokens), against decoding the tokens again, which
/// also costs llama.cpp extra passes when the prompts read in one step
/// differ in length (`split_equal` takes as many tokens of each). Measured
/// with 4 and 8 streams of 45-token chats (bench/RESULTS.md): copying from
/// a 4-token gain beat copying from 32 (1.40× against 1.28× llama-server
/// at 4 streams, 0.97× against 0.94× at 8).
pub const STREAM_COPY_MIN: usize = 4;

/// What a free slot offers one waiting request.
#[derive(Clone, Copy, Debug)]
pub struct Free {
    /// The slot.
    pub index: usize,
    /// How much of the request's prompt the slot's cache holds for the
    /// request's agent (0 when the tokens are another agent's).
    pub prefix: usize,
    /// The cache holds another agent's tokens.
    pub foreign: bool,
    /// The cache holds nothing.
    pub empty: bool,
    /// When the slot was last freed (a counter).
    pub freed_at: u64,
}

/// One KV cache shared by the sequences: the slot holding the longest
/// prefix, else an empty one (other agents' prefixes stay), else the least
/// recently used.
pub fn shared_slot(free: &[Free]) -> Option<usize> {
    free.iter()
        .max_by_key(|f| (f.prefix, f.empty, Reverse(f.freed_at)))
        .map(|f| f.index)
}

/// A KV stream per slot. llama.cpp decodes in one pass only sequences of
/// consecutive ids (`split_equal`), so the busy slots are kept together:
/// the `starting` requests that start now (at least this one) take the
/// lowest free slots, those that hold no other agent's prefix first; among
/// those, this one takes the slot holding the longest prefix of its
/// prompt (the lowest on a tie). Requests arriving together thus find
/// their own streams instead of copying them; a lone one takes the lowest
/// free slot, and a longer prefix held elsewhere is copied in
/// ([`copy_source`]).
pub fn stream_slot(free: &[Free], starting: usize) -> Option<usize> {
    let mut lowest: Vec<&Free> = free.iter().collect();
    lowest.sort_by_key(|f| (f.foreign, f.index));
    lowest.truncate(starting.max(1));
    lowest
        .into_iter()
        .min_by_key(|f| (Reverse(f.prefix), f.foreign, f.index))
        .map(|f| f.index)
}

/// The idle slot whose stream to copy into a slot that holds `here` tokens
/// of the prompt: of `idle` (slot, prefix it holds for the request's
/// agent), the one with the longest prefix, if it is longer by at least
/// [`STREAM_COPY_MIN`] tokens.
pub fn copy_source(here: usize, idle: impl IntoIterator<Item = (usize, usize)>) -> Option<usize> {
    let (src, len) = idle.into_iter().max_by_key(|&(i, len)| (len, Reverse(i)))?;
    (len >= here + STREAM_COPY_MIN).then_some(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(index: usize, prefix: usize) -> Free {
        Free {
            index,
            prefix,
            foreign: false,
            empty: prefix == 0,
            freed_at: 0,
        }
    }

    #[test]
    fn a_lone_request_takes_the_lowest_free_slot_whatever_a_higher_one_holds() {
        let slots = [free(1, 3), free(2, 40), free(5, 0)];
        assert_eq!(stream_slot(&slots, 1), Some(1));
    }

    #[test]
    fn requests_starting_together_take_their_own_streams_among_the_lowest() {
        // Slots 0..4 free, three requests start: slots 0, 1 and 2 are
        // theirs to share; this one's prompt is in slot 2 (kept), not in
        // slot 3 (outside the three).
        let slots = [free(0, 10), free(1, 10), free(2, 40), free(3, 44)];
        assert_eq!(stream_slot(&slots, 3), Some(2));
        // With all four starting, slot 3's longer prefix wins.
        assert_eq!(stream_slot(&slots, 4), Some(3));
        // On a tie, the lowest.
        let tie = [free(0, 10), free(1, 40), free(2, 40)];
        assert_eq!(stream_slot(&tie, 3), Some(1));
    }

    #[test]
    fn another_agents_prefix_is_taken_last() {
        let mut theirs = free(0, 0);
        theirs.foreign = true;
        theirs.empty = false;
        // One request: slot 1 (free of other agents' tokens) before the
        // lower slot 0.
        assert_eq!(stream_slot(&[theirs, free(1, 0)], 1), Some(1));
        // Two requests: slot 0 is among theirs, but an own prefix wins
        // over it, and without one the slot that holds nothing foreign.
        assert_eq!(stream_slot(&[theirs, free(1, 0)], 2), Some(1));
        assert_eq!(stream_slot(&[theirs], 1), Some(0));
        assert_eq!(stream_slot(&[], 1), None);
    }

    #[test]
    fn a_shared_cache_takes_the_longest_prefix_then_an_empty_slot_then_the_least_recent() {
        let used = |index, freed_at| Free {
            index,
            prefix: 0,
            foreign: true,
            empty: false,
            freed_at,
        };
        assert_eq!(shared_slot(&[used(0, 1), free(1, 12), free(2, 0)]), Some(1));
        assert_eq!(shared_slot(&[used(0, 1), free(2, 0)]), Some(2));
        assert_eq!(shared_slot(&[used(0, 5), used(1, 2), used(2, 9)]), Some(1));
        assert_eq!(shared_slot(&[]), None);
    }

    #[test]
    fn a_stream_is_copied_only_for_a_gain_worth_a_copy() {
        let idle = [(3, 20), (4, 44), (6, 44)];
        assert_eq!(copy_source(40, idle), Some(4), "the lowest of the longest");
        assert_eq!(copy_source(41, idle), None, "3 tokens gained");
        assert_eq!(copy_source(0, []), None);
    }
}
