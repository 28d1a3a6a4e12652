//! Zero heap allocations per admitted request through the facade (`enter` and the guard's
//! report on drop) and through the tower layer (naming the route, deciding, the inner call,
//! reading the body to its end and the report), counted by a global allocator in a test
//! binary of its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use atrion::{Atrion, Priority};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn an_admitted_request_through_the_facade_does_not_allocate() {
    let atrion = Atrion::builder().build().unwrap();
    for _ in 0..1_000 {
        drop(atrion.enter("GET /users", Priority::Normal));
    }
    let before = ALLOCATIONS.with(Cell::get);
    let mut admitted = 0;
    for i in 0..100_000u32 {
        if let Ok(mut guard) = atrion.enter("GET /users", Priority::Normal) {
            admitted += 1;
            if i % 7 == 0 {
                guard.fail();
            }
            guard.saturation(0.4);
        }
    }
    let after = ALLOCATIONS.with(Cell::get);
    assert!(admitted > 90_000, "{admitted}");
    assert_eq!(after - before, 0, "allocations over {admitted} admitted requests");
}

#[test]
fn an_admitted_request_through_the_tower_layer_does_not_allocate() {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use atrion::layer::AtrionLayer;
    use http::{Request, Response, Uri};
    use http_body::Body;
    use tower::{Layer, Service};

    let atrion = Arc::new(Atrion::builder().build().unwrap());
    let inner = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, std::convert::Infallible>(Response::new(String::new()))
    });
    let mut service = AtrionLayer::new(atrion).layer(inner);
    let mut cx = Context::from_waker(Waker::noop());
    // One request through the layer, its body read to the end; whether it was admitted.
    let mut request = |service: &mut atrion::layer::AtrionService<_>| {
        assert!(service.poll_ready(&mut cx).is_ready());
        let mut req = Request::new(());
        *req.uri_mut() = Uri::from_static("/users");
        let mut future = std::pin::pin!(service.call(req));
        let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else { panic!("the service answers at once") };
        let admitted = response.status().is_success();
        let mut body = std::pin::pin!(response.into_body());
        while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
        admitted
    };
    for _ in 0..1_000 {
        request(&mut service);
    }
    let before = ALLOCATIONS.with(Cell::get);
    let admitted = (0..100_000).filter(|_| request(&mut service)).count();
    let after = ALLOCATIONS.with(Cell::get);
    assert!(admitted > 90_000, "{admitted}");
    assert_eq!(after - before, 0, "allocations over {admitted} admitted requests");
}
