//! One worker's spare connection buffers, for the express lane: a connection the lane
//! served gives its buffers back when it ends, and the next connection takes them, so a new
//! connection costs no `malloc` and `free` for them (four buffers, 8 and 16 KiB among
//! them). A buffer that grew, or that went to the full path, is not kept, and at most
//! [`MAX_SPARE`] sets are.

use std::sync::Mutex;

use bytes::BytesMut;

/// Sets kept per worker: 26 KiB each with the default head limit, 416 KiB in all.
pub const MAX_SPARE: usize = 16;

/// What the lane's size for a buffer may grow to and still be kept.
const KEPT_GROWTH: usize = 2;

/// What one connection's exchanges read and write through.
#[derive(Debug)]
pub struct Buffers {
    /// The client's bytes: request heads.
    pub head: BytesMut,
    /// The head sent to the backend.
    pub upstream_head: Vec<u8>,
    /// What is to be written to the client.
    pub out: Vec<u8>,
    /// The backend's bytes.
    pub from_backend: BytesMut,
}

/// The sizes a connection's buffers are made at.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub head: usize,
    pub upstream_head: usize,
    pub out: usize,
    pub from_backend: usize,
}

impl Buffers {
    fn new(sizes: Sizes) -> Self {
        Self {
            head: BytesMut::with_capacity(sizes.head),
            upstream_head: Vec::with_capacity(sizes.upstream_head),
            out: Vec::with_capacity(sizes.out),
            from_backend: BytesMut::with_capacity(sizes.from_backend),
        }
    }

    /// Emptied for the next connection, if each is still its own (not handed over) and has
    /// not grown past twice its size.
    fn emptied(mut self, sizes: Sizes) -> Option<Self> {
        fn vec(buf: &mut Vec<u8>, size: usize) -> bool {
            buf.clear();
            (size..=size * KEPT_GROWTH).contains(&buf.capacity())
        }
        fn bytes(buf: &mut BytesMut, size: usize) -> bool {
            buf.clear();
            // Without allocating: false for a buffer shared with bytes handed over.
            buf.try_reclaim(size) && buf.capacity() <= size * KEPT_GROWTH
        }
        let kept = bytes(&mut self.head, sizes.head)
            && vec(&mut self.upstream_head, sizes.upstream_head)
            && vec(&mut self.out, sizes.out)
            && bytes(&mut self.from_backend, sizes.from_backend);
        kept.then_some(self)
    }
}

/// A worker's spare [`Buffers`].
#[derive(Debug)]
pub struct Spare {
    sizes: Sizes,
    kept: Mutex<Vec<Buffers>>,
}

impl Spare {
    pub fn new(sizes: Sizes) -> Self {
        Self {
            sizes,
            kept: Mutex::new(Vec::with_capacity(MAX_SPARE)),
        }
    }

    /// A spare set, or a new one.
    pub fn take(&self) -> Buffers {
        let spare = self.kept.lock().unwrap_or_else(|e| e.into_inner()).pop();
        spare.unwrap_or_else(|| Buffers::new(self.sizes))
    }

    /// Keeps `buffers` for the next connection, if they are fit to be and there is room.
    pub fn give_back(&self, buffers: Buffers) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < MAX_SPARE
            && let Some(buffers) = buffers.emptied(self.sizes)
        {
            kept.push(buffers);
        }
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.kept.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf as _;

    const SIZES: Sizes = Sizes {
        head: 16 * 1024,
        upstream_head: 1024,
        out: 1024,
        from_backend: 8 * 1024,
    };

    #[test]
    fn buffers_given_back_are_taken_again_emptied_without_a_new_allocation() {
        let spare = Spare::new(SIZES);
        let mut buffers = spare.take();
        buffers
            .head
            .extend_from_slice(b"GET / HTTP/1.1\r\n\r\nGET /next");
        buffers.head.advance(18);
        buffers.out.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        buffers
            .from_backend
            .extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        let head_at = buffers.head.as_ptr() as usize - 18;
        let out_at = buffers.out.as_ptr();
        spare.give_back(buffers);
        assert_eq!(spare.kept(), 1);

        let again = spare.take();
        assert_eq!(spare.kept(), 0);
        assert!(again.head.is_empty() && again.out.is_empty());
        assert!(again.upstream_head.is_empty() && again.from_backend.is_empty());
        assert_eq!(again.head.as_ptr() as usize, head_at, "the same allocation");
        assert!(again.head.capacity() >= SIZES.head);
        assert_eq!(again.out.as_ptr(), out_at);
    }

    #[test]
    fn a_buffer_handed_over_or_grown_is_not_kept() {
        let spare = Spare::new(SIZES);
        let mut handed = spare.take();
        handed.head.extend_from_slice(b"POST / HTTP/1.1\r\n");
        let to_hyper = handed.head.split().freeze();
        spare.give_back(handed);
        assert_eq!(
            spare.kept(),
            0,
            "its head buffer is shared with the hand-over"
        );
        drop(to_hyper);

        let mut grown = spare.take();
        grown.out.extend_from_slice(&[b'x'; 64 * 1024]);
        spare.give_back(grown);
        assert_eq!(spare.kept(), 0, "a 64 KiB body grew it");

        let mut taken = spare.take();
        taken.head = BytesMut::new();
        spare.give_back(taken);
        assert_eq!(
            spare.kept(),
            0,
            "taken away whole (frozen for the full path)"
        );
    }

    #[test]
    fn at_most_max_spare_sets_are_kept() {
        let spare = Spare::new(SIZES);
        let taken: Vec<_> = (0..MAX_SPARE + 3).map(|_| spare.take()).collect();
        for buffers in taken {
            spare.give_back(buffers);
        }
        assert_eq!(spare.kept(), MAX_SPARE);
    }
}
