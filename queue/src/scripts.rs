//! The Lua scripts of the protocol, each prefixed with `common.lua`.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                include_str!("scripts/common.lua"),
                "\n",
                include_str!(concat!("scripts/", $file))
            ))
        });
    };
}

script!(ENQUEUE, "enqueue.lua");
script!(CLAIM, "claim.lua");
script!(HEARTBEAT, "heartbeat.lua");
script!(ACK, "ack.lua");
script!(FAIL, "fail.lua");
script!(RELEASE, "release.lua");
script!(REAP, "reap.lua");
script!(CANCEL, "cancel.lua");
script!(ERASE, "erase.lua");
script!(DEAD_LETTERS, "dead_letters.lua");
script!(STATS, "stats.lua");
script!(REGISTER, "register.lua");
script!(PAUSE, "pause.lua");
