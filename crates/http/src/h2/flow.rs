//! Flow-control accounting (RFC 9113 §5.2, §6.9), without I/O.
//!
//! Receiving: the client may send as many DATA bytes as the window we announced; credit goes
//! back (WINDOW_UPDATE) only as the request body's consumer takes the bytes, so a slow
//! upstream holds the client back instead of filling our memory. Updates are batched: one is
//! sent when half the window has been consumed, so a fast upload costs a WINDOW_UPDATE per
//! half-window rather than one per DATA frame.
//!
//! Sending: a window is what the client lets us send; SETTINGS_INITIAL_WINDOW_SIZE changes may
//! push a stream's window below zero (RFC 9113 §6.9.2), so it is signed.

use super::frame::MAX_WINDOW;

/// What the peer exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowError;

/// Our receive window towards the peer (connection or one stream).
#[derive(Debug, Clone, Copy)]
pub struct RecvWindow {
    /// Bytes the peer may still send.
    available: u32,
    /// Bytes consumed but not yet announced back.
    unclaimed: u32,
    /// The window we keep open.
    size: u32,
}

impl RecvWindow {
    /// A window of `size` bytes (already announced to the peer).
    pub fn new(size: u32) -> Self {
        Self {
            available: size,
            unclaimed: 0,
            size,
        }
    }

    /// The peer sent `len` flow-controlled bytes.
    pub fn receive(&mut self, len: u32) -> Result<(), FlowError> {
        self.available = self.available.checked_sub(len).ok_or(FlowError)?;
        Ok(())
    }

    /// `len` received bytes were consumed (or discarded). Returns the increment to announce
    /// now, if enough has accumulated.
    pub fn release(&mut self, len: u32) -> Option<u32> {
        self.unclaimed = self.unclaimed.saturating_add(len);
        // Never announce more than was received: the window must stay within `size`.
        let open = self.size.saturating_sub(self.available);
        self.unclaimed = self.unclaimed.min(open);
        if self.unclaimed >= self.size / 2 && self.unclaimed > 0 {
            let increment = self.unclaimed;
            self.available += increment;
            self.unclaimed = 0;
            Some(increment)
        } else {
            None
        }
    }

    pub fn available(&self) -> u32 {
        self.available
    }
}

/// A window the peer grants us (connection or one stream).
#[derive(Debug, Clone, Copy)]
pub struct SendWindow(i64);

impl SendWindow {
    pub fn new(size: u32) -> Self {
        Self(i64::from(size))
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> usize {
        usize::try_from(self.0.max(0)).unwrap_or(0)
    }

    pub fn consume(&mut self, len: usize) {
        self.0 -= len as i64;
    }

    /// A WINDOW_UPDATE: the window may not exceed 2^31 - 1.
    pub fn increase(&mut self, increment: u32) -> Result<(), FlowError> {
        let new = self.0 + i64::from(increment);
        if new > i64::from(MAX_WINDOW) {
            return Err(FlowError);
        }
        self.0 = new;
        Ok(())
    }

    /// SETTINGS_INITIAL_WINDOW_SIZE changed by `delta`: applies to open streams, may go
    /// negative, may not exceed 2^31 - 1.
    pub fn adjust(&mut self, delta: i64) -> Result<(), FlowError> {
        let new = self.0 + delta;
        if new > i64::from(MAX_WINDOW) {
            return Err(FlowError);
        }
        self.0 = new;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiving_past_the_window_is_an_error() {
        let mut w = RecvWindow::new(100);
        assert_eq!(w.receive(60), Ok(()));
        assert_eq!(w.receive(41), Err(FlowError));
        assert_eq!(w.receive(40), Ok(()));
        assert_eq!(w.available(), 0);
        assert_eq!(w.receive(1), Err(FlowError));
    }

    #[test]
    fn credit_returns_in_batches_of_half_a_window() {
        let mut w = RecvWindow::new(100);
        w.receive(100).unwrap();
        assert_eq!(w.release(30), None);
        assert_eq!(w.release(30), Some(60));
        assert_eq!(w.available(), 60);
        assert_eq!(w.release(40), None);
        // Releasing more than was received never opens the window past its size.
        assert_eq!(w.release(1000), None);
        assert_eq!(w.available(), 60);
        w.receive(60).unwrap();
        assert_eq!(w.release(60), Some(100));
        assert_eq!(w.available(), 100);
    }

    #[test]
    fn send_windows_overflow_and_go_negative() {
        let mut w = SendWindow::new(65_535);
        w.consume(65_535);
        assert_eq!(w.available(), 0);
        assert_eq!(w.adjust(-1000), Ok(()));
        assert_eq!(w.available(), 0);
        assert_eq!(w.increase(1500), Ok(()));
        assert_eq!(w.available(), 500);
        assert_eq!(w.increase(MAX_WINDOW), Err(FlowError));
        assert_eq!(w.available(), 500, "a refused update changes nothing");
        let mut w = SendWindow::new(MAX_WINDOW);
        assert_eq!(w.increase(1), Err(FlowError));
        assert_eq!(w.adjust(1), Err(FlowError));
    }
}
