//! The guard that owns a request's record until its response body does, and ends it if
//! the request ends any other way: the future dropped, or a panic in the inner service or
//! in user code the layer calls (a span-name closure, a body's `size_hint`).

/// A record that can end before its response body exists.
pub(crate) trait EndEarly {
    /// The future was dropped (`panicked == false`: a cancellation), or unwound through
    /// (`panicked == true`).
    fn end_early(self, panicked: bool);
}

/// `in_user_code` is set while code that is not ours runs (the inner service's `call`
/// and `poll`, callbacks): if the guard is dropped then, that code never returned, so it
/// panicked. This holds even when a `catch_unwind` outside drops the future only after
/// the panic was caught (when `std::thread::panicking()` is false again).
pub(crate) struct RequestGuard<R: EndEarly> {
    record: Option<R>,
    in_user_code: bool,
}

impl<R: EndEarly> RequestGuard<R> {
    /// A guard for a request about to enter the inner service's `call`.
    pub(crate) fn entering(record: Option<R>) -> Self {
        Self {
            record,
            in_user_code: true,
        }
    }

    /// The inner service's `call` returned.
    pub(crate) fn left(mut self) -> Self {
        self.in_user_code = false;
        self
    }

    /// Runs `f`, which calls code that is not ours, marked as such.
    pub(crate) fn user_code<T>(&mut self, f: impl FnOnce(&mut Option<R>) -> T) -> T {
        self.in_user_code = true;
        let out = f(&mut self.record);
        self.in_user_code = false;
        out
    }

    pub(crate) fn record(&self) -> Option<&R> {
        self.record.as_ref()
    }

    pub(crate) fn is_recording(&self) -> bool {
        self.record.is_some()
    }

    /// Takes the record out, for a body to own or to end now.
    pub(crate) fn take(&mut self) -> Option<R> {
        self.record.take()
    }
}

impl<R: EndEarly> Drop for RequestGuard<R> {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            record.end_early(self.in_user_code || std::thread::panicking());
        }
    }
}
