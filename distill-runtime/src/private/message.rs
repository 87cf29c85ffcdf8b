//! [`Message`]: text built by a `const fn`, for the compile-time path check's errors.

/// Capacity of a [`Message`], in bytes: room for the path, the failing segment and a list of the
/// existing children; a longer message ends with `…`.
pub(super) const MESSAGE_CAPACITY: usize = 480;

/// A message built in a `const fn` (a fixed buffer; an overlong message ends with `…`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Message {
    buf: [u8; MESSAGE_CAPACITY],
    len: usize,
    full: bool,
}

impl Message {
    pub(super) const fn new() -> Message {
        Message { buf: [0; MESSAGE_CAPACITY], len: 0, full: false }
    }

    /// Appends `s` whole, or marks the message full (never cuts inside a string: stays UTF-8).
    pub(super) const fn push(self, s: &str) -> Message {
        self.push_bytes(s.as_bytes())
    }

    /// Appends `bytes` (a part of a `str` cut at segment boundaries, hence UTF-8) whole, or marks the
    /// message full.
    pub(super) const fn push_bytes(mut self, bytes: &[u8]) -> Message {
        const ELLIPSIS: &[u8] = "…".as_bytes();
        if self.full {
            return self;
        }
        let appended = if self.len + bytes.len() + ELLIPSIS.len() > MESSAGE_CAPACITY {
            self.full = true;
            ELLIPSIS
        } else {
            bytes
        };
        let mut i = 0;
        while i < appended.len() {
            self.buf[self.len] = appended[i];
            self.len += 1;
            i += 1;
        }
        self
    }

    /// Appends `n` in decimal.
    pub(super) const fn push_usize(self, mut n: usize) -> Message {
        /// The decimal digits of `u64::MAX`, the widest `usize`.
        const MAX_DIGITS: usize = 20;
        let mut digits = [0u8; MAX_DIGITS];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push_bytes(digits.split_at(start).1)
    }

    pub(super) const fn as_str(&self) -> &str {
        match core::str::from_utf8(self.buf.split_at(self.len).0) {
            Ok(s) => s,
            // Unreachable in practice: only whole strings and whole segments are appended.
            Err(_) => "invalid path",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_cuts_cleanly() {
        let m = Message::new().push("index ").push_usize(0).push(", ").push_usize(1234567);
        assert_eq!(m.as_str(), "index 0, 1234567");
        let long = "é".repeat(MESSAGE_CAPACITY);
        let m = Message::new().push("start ").push(&long).push("never");
        assert_eq!(m.as_str(), "start …");
    }
}
