//! Whatever bytes arrive, the trace-text parsers return a value or a typed
//! error: they never panic. Probes and users send arbitrary text.

use lineprobe_shared::{parse_trace_bytes, parse_trace_text};
use proptest::prelude::*;

/// Fragments real outputs are made of, so that generated inputs get past the
/// format detectors and exercise the line parsers, not only the rejections.
const FRAGMENTS: &[&str] = &[
    "traceroute to 192.0.2.1 (192.0.2.1), 30 hops max, 60 byte packets\n",
    "traceroute6 to 2001:db8::1 (2001:db8::1), 30 hops max, 80 byte packets\n",
    " 1  192.168.1.1  0.512 ms  0.480 ms  0.470 ms\n",
    " 2  * * *\n",
    " 3  host.example (198.51.100.7)  1.2 ms !H  1.3 ms !N *\n",
    "    203.0.113.9  4.1 ms\n",
    " 4  [AS4134] 202.97.1.1  9.9 ms\n",
    "通过最多 30 个跃点跟踪\n",
    "到 www.example.com [192.0.2.5] 的路由:\n",
    "Tracing route to 192.0.2.5 over a maximum of 30 hops\n",
    "  1    <1 毫秒    2 ms     1 ms  192.168.4.129\n",
    "  8     *        *        *     请求超时。\n",
    "  2    <1 ms    <1 ms    11 ms  host [2001:db8::2]\n",
    "Trace complete.\n",
    " 1?: [LOCALHOST]                      pmtu 1500\n",
    " 1:  192.168.1.1                                           0.400ms\n",
    "     Resume: pmtu 1500 hops 3 back 3\n",
    "HOST: box                         Loss%   Snt   Last   Avg  Best  Wrst StDev\n",
    "  1.|-- 192.168.1.1                0.0%     1    0.4   0.4   0.4   0.4   0.0\n",
    "  2.|-- ???                       100.0     1    0.0   0.0   0.0   0.0   0.0\n",
    "{\"report\": {\"mtr\": {\"dst\": \"192.0.2.1\"}, \"hubs\": [{\"count\": 1, \"host\": \"192.0.2.1\"}]}}",
    "\r\n",
    "\u{feff}",
    " 255 ",
    " 99999999999999999999 ",
    "*",
    "ms ",
    "(",
    "[",
    ")",
    "]",
];

fn fragment_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(FRAGMENTS).prop_map(str::to_owned),
            ".{0,40}",
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_trace_bytes(&raw);
    }

    #[test]
    fn tool_like_text_never_panics(text in fragment_text()) {
        let _ = parse_trace_text(&text);
        let _ = parse_trace_bytes(text.as_bytes());
    }
}
