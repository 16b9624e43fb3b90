//! A read timeout for long-lived bodies (server-sent events, long polls, tunnels) that costs
//! nothing until a body has to wait.

use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

/// The route's read timeout for a streamed body: the longest the upstream may send
/// nothing. No timer exists until the body first has to wait (most bodies never do), and then
/// one timer serves the whole body: when it fires, a body that moved since it was armed gets
/// another period (so silence is detected between one and two periods after the last byte),
/// which spares a clock read and a timer update per frame.
pub struct IdleWatch {
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    moved: bool,
}

impl IdleWatch {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: None,
            moved: false,
        }
    }

    /// Bytes moved: the current period does not count as silent.
    pub fn moved(&mut self) {
        self.moved = true;
    }

    /// The error a body ends with when its upstream went silent.
    pub fn error(&self) -> crate::body::BoxError {
        Box::new(crate::body::BodyError::upstream(format!(
            "the upstream sent nothing for the route's read_timeout ({:?})",
            self.timeout
        )))
    }

    /// Whether the body has been silent too long (else the waker is registered).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if !std::mem::take(&mut self.moved) {
                return true;
            }
            let next = sleep.deadline() + timeout;
            sleep.as_mut().reset(next);
        }
    }
}
