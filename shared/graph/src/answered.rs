//! The `request-id` of the answer a piece of work got, for the record of what it did.
//!
//! Graph gives every answer a `request-id` header, the id Microsoft support asks for
//! (<https://learn.microsoft.com/en-us/graph/errors>); a JSON batch's items carry none of their
//! own, so the envelope's identifies them (<https://learn.microsoft.com/en-us/graph/json-batching>).
//! The typed calls of [`crate::GraphClient`] return bodies, not headers; instead, work run by
//! [`with_request_id`] learns the id of the last successful answer any request made within it
//! got, through a task-local the client writes on each success.

use std::cell::RefCell;
use std::future::Future;

tokio::task_local! {
    static LAST: RefCell<Option<String>>;
}

/// Runs `work` and returns, with its output, the `request-id` of the last successful Graph
/// answer a request made within it got (`None` when none succeeded or Graph sent none).
pub async fn with_request_id<F: Future>(work: F) -> (F::Output, Option<String>) {
    LAST.scope(RefCell::new(None), async move {
        let out = work.await;
        let id = LAST.with(|last| last.borrow_mut().take());
        (out, id)
    })
    .await
}

/// Notes a successful answer's `request-id` for the enclosing [`with_request_id`], if any.
pub(crate) fn note(request_id: Option<&str>) {
    if let Some(id) = request_id {
        let _ = LAST.try_with(|last| *last.borrow_mut() = Some(id.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_noted_id_of_the_work_and_nothing_outside_it() {
        note(Some("outside"));
        let (out, id) = with_request_id(async {
            note(Some("first"));
            note(None);
            note(Some("second"));
            7
        })
        .await;
        assert_eq!((out, id.as_deref()), (7, Some("second")));
        let ((), none) = with_request_id(async {}).await;
        assert_eq!(none, None);
    }
}
