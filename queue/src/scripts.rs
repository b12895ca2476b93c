//! The Lua scripts of the protocol, each prefixed with `common.lua`, and their contracts.
//!
//! Every script opens with a header (`--[[ … Input: KEYS[1] …, ARGV[1] … Output: … ]]`, the
//! way BullMQ's `commands/*.lua` do). [`Layout`] says the same in Rust: how many fixed ARGV
//! come first and what follows them. The tests below hold the header, the Lua loops that read
//! ARGV and the layout to each other, and each client module checks that its argument type
//! writes exactly the layout's stride, so a field added on one side fails a unit test, not a
//! job in production.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

/// What follows a script's fixed ARGV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Nothing.
    None,
    /// A list of single values (kinds, ids).
    List,
    /// Records of this many values each (one per job).
    Records(usize),
}

/// A script's ARGV layout: `fixed` values, then the tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Leading ARGV, each named in the header.
    pub fixed: usize,
    /// What follows.
    pub tail: Tail,
}

/// One protocol script: its source (with `common.lua` in front) and its ARGV layout.
pub(crate) struct Contract {
    /// The file under `scripts/`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub file: &'static str,
    /// The script's own text, without `common.lua`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub own_source: &'static str,
    /// What ARGV holds.
    pub layout: Layout,
    script: LazyLock<Script>,
}

impl Contract {
    /// An invocation to fill with KEYS and ARGV.
    pub(crate) fn prepare_invoke(&self) -> ScriptInvocation<'_> {
        self.script.prepare_invoke()
    }

    /// The stride of the per-job records (0 when the script takes none).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn stride(&self) -> usize {
        match self.layout.tail {
            Tail::Records(n) => n,
            Tail::None | Tail::List => 0,
        }
    }
}

macro_rules! script {
    ($name:ident, $file:literal, $fixed:expr, $tail:expr) => {
        pub(crate) static $name: Contract = Contract {
            file: $file,
            own_source: include_str!(concat!("scripts/", $file)),
            layout: Layout {
                fixed: $fixed,
                tail: $tail,
            },
            script: LazyLock::new(|| {
                Script::new(concat!(
                    include_str!("scripts/common.lua"),
                    "\n",
                    include_str!(concat!("scripts/", $file))
                ))
            }),
        };
    };
}

script!(ENQUEUE, "enqueue.lua", 3, Tail::Records(15));
script!(CLAIM, "claim.lua", 5, Tail::List);
script!(HEARTBEAT, "heartbeat.lua", 1, Tail::Records(3));
script!(ACK, "ack.lua", 1, Tail::Records(5));
script!(FAIL, "fail.lua", 2, Tail::Records(6));
script!(RELEASE, "release.lua", 1, Tail::Records(3));
script!(REAP, "reap.lua", 4, Tail::List);
script!(CANCEL, "cancel.lua", 2, Tail::None);
script!(ERASE, "erase.lua", 6, Tail::None);
script!(DEAD_LETTERS, "dead_letters.lua", 6, Tail::List);
script!(STATS, "stats.lua", 0, Tail::List);
script!(REGISTER, "register.lua", 3, Tail::None);
script!(PAUSE, "pause.lua", 3, Tail::None);
script!(SEARCH, "search.lua", 12, Tail::None);
script!(PROGRESS, "progress.lua", 0, Tail::Records(4));
script!(HANDOFF, "handoff.lua", 0, Tail::Records(5));
script!(PIPELINE, "pipeline.lua", 6, Tail::None);
script!(REVIEW, "review.lua", 6, Tail::None);

/// Every protocol script (the provider-slot semaphore in `slots.rs` keys its own zset and is
/// checked there).
#[cfg(test)]
pub(crate) fn all() -> [&'static Contract; 18] {
    [
        &ENQUEUE,
        &CLAIM,
        &HEARTBEAT,
        &ACK,
        &FAIL,
        &RELEASE,
        &REAP,
        &CANCEL,
        &ERASE,
        &DEAD_LETTERS,
        &STATS,
        &REGISTER,
        &PAUSE,
        &SEARCH,
        &PROGRESS,
        &HANDOFF,
        &PIPELINE,
        &REVIEW,
    ]
}

/// Checks a script's header and ARGV reads against `layout`; returns what is wrong.
#[cfg(test)]
pub(crate) fn check_contract(file: &str, source: &str, layout: Layout, keys_line: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    let Some((header, body)) = source.strip_prefix("--[[\n").and_then(|rest| rest.split_once("\n]]\n")) else {
        return vec![format!("{file}: no --[[ … ]] header at the top")];
    };
    let input = header
        .split_once("Input:")
        .and_then(|(_, rest)| rest.split_once("Output:"))
        .map(|(input, _)| input);
    let Some(input) = input else {
        return vec![format!("{file}: the header has no Input: … Output: sections")];
    };
    let named: Vec<&str> = input
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("KEYS[") || l.starts_with("ARGV["))
        .collect();
    if named.first() != Some(&keys_line) && !named.first().is_some_and(|l| l.starts_with(keys_line)) {
        wrong.push(format!(
            "{file}: the first input line should be {keys_line:?}, is {:?}",
            named.first()
        ));
    }
    for i in 1..=layout.fixed {
        if !named.iter().any(|l| l.starts_with(&format!("ARGV[{i}] "))) {
            wrong.push(format!("{file}: the header does not name ARGV[{i}]"));
        }
    }
    if named
        .iter()
        .any(|l| l.starts_with(&format!("ARGV[{}] ", layout.fixed + 1)))
    {
        wrong.push(format!(
            "{file}: the header names ARGV[{}] beyond the layout",
            layout.fixed + 1
        ));
    }
    let tail_line = named
        .iter()
        .find(|l| l.starts_with(&format!("ARGV[{}..]", layout.fixed + 1)));
    let first_tail = layout.fixed + 1;
    match layout.tail {
        Tail::None => {
            if let Some(l) = tail_line {
                wrong.push(format!("{file}: the header has a tail {l:?}; the layout has none"));
            }
            if body.contains("#ARGV") {
                wrong.push(format!("{file}: the body loops over ARGV; the layout has no tail"));
            }
        }
        Tail::List => {
            if !tail_line.is_some_and(|l| l.ends_with("...")) {
                wrong.push(format!(
                    "{file}: the header should end with ARGV[{first_tail}..] <name>..."
                ));
            }
            let direct = [
                format!("for i = {first_tail}, #ARGV do"),
                format!("for k = {first_tail}, #ARGV do"),
            ];
            let via_const = body.contains(&format!("= {first_tail}\n")) && body.contains(", #ARGV do");
            if !direct.iter().any(|d| body.contains(d.as_str())) && !via_const {
                wrong.push(format!(
                    "{file}: the body does not read the list from ARGV[{first_tail}]"
                ));
            }
        }
        Tail::Records(n) => {
            if !tail_line.is_some_and(|l| l.contains(&format!("per job (stride {n})"))) {
                wrong.push(format!(
                    "{file}: the header should say ARGV[{first_tail}..] per job (stride {n})"
                ));
            }
            if !body.contains(&format!("for i = {first_tail}, #ARGV, {n} do")) {
                wrong.push(format!("{file}: the body does not step ARGV from {first_tail} by {n}"));
            }
            for off in n..n + 4 {
                if body.contains(&format!("ARGV[i + {off}]")) {
                    wrong.push(format!("{file}: the body reads ARGV[i + {off}], past a record of {n}"));
                }
            }
        }
    }
    // A fixed argument read by number beyond the layout.
    for i in layout.fixed + 1..layout.fixed + 8 {
        if body.contains(&format!("ARGV[{i}]")) {
            wrong.push(format!(
                "{file}: the body reads ARGV[{i}], beyond the {} fixed",
                layout.fixed
            ));
        }
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL_PREFIX: &str = "KEYS[1]    the pool prefix 'gantry:{pool}:'";

    #[test]
    fn every_script_matches_its_header_and_layout() {
        let wrong: Vec<String> = all()
            .iter()
            .flat_map(|c| check_contract(c.file, c.own_source, c.layout, POOL_PREFIX))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn the_check_catches_a_script_that_drifted_from_its_layout() {
        // One field more per record than the header and the layout say.
        let drifted = "--[[\n  x\n\n  Input:\n    KEYS[1]    the pool prefix 'gantry:{pool}:'\n    ARGV[1]    ttl\n    \
                       ARGV[2..]  per job (stride 3): id, kind, token\n\n  Output:\n    codes\n]]\n\
                       for i = 2, #ARGV, 3 do\n  local x = ARGV[i + 3]\nend\n";
        let wrong = check_contract(
            "drifted.lua",
            drifted,
            Layout {
                fixed: 1,
                tail: Tail::Records(3),
            },
            POOL_PREFIX,
        );
        assert_eq!(wrong.len(), 1, "{wrong:#?}");
        assert!(wrong[0].contains("ARGV[i + 3]"), "{wrong:#?}");
        // A header that forgot a fixed argument the body reads.
        let unnamed = "--[[\n  x\n\n  Input:\n    KEYS[1]    the pool prefix 'gantry:{pool}:'\n    ARGV[1]    a\n\n  \
                       Output:\n    1\n]]\nlocal a, b = ARGV[1], ARGV[2]\n";
        let wrong = check_contract(
            "unnamed.lua",
            unnamed,
            Layout {
                fixed: 2,
                tail: Tail::None,
            },
            POOL_PREFIX,
        );
        assert!(wrong.iter().any(|w| w.contains("does not name ARGV[2]")), "{wrong:#?}");
        // A script with no header at all.
        assert_eq!(
            check_contract(
                "bare.lua",
                "return 1\n",
                Layout {
                    fixed: 0,
                    tail: Tail::None
                },
                POOL_PREFIX
            )
            .len(),
            1
        );
    }
}
