//! `wire::decode` of both directions' messages on arbitrary bytes: refused,
//! or a message whose own encoding decodes to the same encoding.
#![no_main]

use bincode::{Decode, Encode};
use ffrtmp_runtime::wire::{self, ToMaster, ToWorker};
use libfuzzer_sys::fuzz_target;

fn check<T: Encode + Decode<()>>(data: &[u8]) {
    let Ok(msg) = wire::decode::<T>(data) else {
        return;
    };
    let bytes = wire::encode(&msg).expect("a decoded message encodes");
    assert!(
        bytes.len() <= data.len(),
        "the canonical form is never longer"
    );
    let back: T = wire::decode(&bytes).expect("an encoding decodes");
    assert_eq!(wire::encode(&back).expect("encodes again"), bytes);
}

fuzz_target!(|data: &[u8]| {
    check::<ToMaster>(data);
    check::<ToWorker>(data);
});
