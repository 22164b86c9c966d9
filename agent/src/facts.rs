//! Facts about the device: OS, version, architecture, the interfaces'
//! addresses, the default-route interface's MAC (only with consent) and
//! whether a proxy is configured. What differs per platform sits behind
//! [`Platform`]; anything a platform cannot tell is left out, never guessed.

use std::fmt::Debug;
use std::net::IpAddr;

use lineprobe_shared::{DeviceFacts, MacAddress, ProxyFacts, ReportLimits};

/// The environment variables that route a program's traffic through a proxy.
/// How long a helper command for a fact (`cmd /C ver`, `reg query`) may
/// take before the fact is given up on.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const HELPER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

const PROXY_ENV: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "SOCKS_PROXY",
    "socks_proxy",
];

/// What the operating system can tell about itself.
pub trait Platform: Send + Sync + Debug {
    /// `linux`, `android`, `windows`, `macos`…
    fn os(&self) -> String {
        std::env::consts::OS.to_owned()
    }
    /// The OS version as the OS reports it; `unknown` when it does not.
    fn os_version(&self) -> String;
    /// The MAC of the interface the default route leaves through.
    fn default_route_mac(&self) -> Option<MacAddress>;
    /// Addresses of the device's own interfaces, loopback excluded.
    fn local_addrs(&self) -> Vec<IpAddr> {
        if_addrs::get_if_addrs()
            .map(|addrs| {
                addrs
                    .into_iter()
                    .filter(|a| !a.is_loopback())
                    .map(|a| a.ip())
                    .collect()
            })
            .unwrap_or_default()
    }
    /// A system-wide proxy setting, described without credentials.
    fn system_proxy(&self) -> Option<String>;
}

/// The platform this agent was built for.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemPlatform;

impl Platform for SystemPlatform {
    fn os_version(&self) -> String {
        os_version()
    }

    fn default_route_mac(&self) -> Option<MacAddress> {
        default_route_mac()
    }

    fn system_proxy(&self) -> Option<String> {
        system_proxy()
    }
}

/// Gathers the device facts; the MAC only when `with_mac` (the config asks
/// for it and the subscriber consented).
pub fn collect_facts(platform: &dyn Platform, with_mac: bool) -> DeviceFacts {
    let env_proxy = env_proxy();
    let system_proxy = platform.system_proxy();
    let details = [system_proxy.as_deref(), env_proxy.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ");
    let mut local_addrs = platform.local_addrs();
    local_addrs.retain(|addr| shareable_addr(*addr, with_mac));
    local_addrs.sort_by_key(|a| (a.is_ipv6(), a.to_string()));
    local_addrs.dedup();
    local_addrs.truncate(ReportLimits::MAX_LOCAL_ADDRS);
    DeviceFacts {
        os: short(&platform.os()),
        os_version: short(&platform.os_version()),
        arch: std::env::consts::ARCH.to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        mac: if with_mac {
            platform.default_route_mac()
        } else {
            None
        },
        local_addrs,
        proxy: ProxyFacts {
            system_configured: system_proxy.is_some(),
            env_configured: env_proxy.is_some(),
            details: (!details.is_empty())
                .then(|| one_line(&details, ReportLimits::MAX_DETAIL_LEN)),
        },
    }
}

/// Whether a local address may go into a report. Link-local addresses
/// (`169.254.0.0/16`, `fe80::/10`) say nothing about the line, and an IPv6
/// interface id formed from the MAC (EUI-64: `ff:fe` in its middle) gives
/// the MAC away: it is kept only where the MAC itself may be sent.
fn shareable_addr(addr: IpAddr, with_mac: bool) -> bool {
    match addr {
        IpAddr::V4(v4) => !v4.is_link_local(),
        IpAddr::V6(v6) => {
            let octets = v6.octets();
            let eui64 = octets[11] == 0xff && octets[12] == 0xfe;
            !v6.is_unicast_link_local() && (with_mac || !eui64)
        }
    }
}

fn short(text: &str) -> String {
    let line = one_line(text, ReportLimits::MAX_SHORT_TEXT_LEN);
    if line.is_empty() {
        "unknown".to_owned()
    } else {
        line
    }
}

/// `text` as a single-line report field: control characters (a platform's
/// multi-line output, a tab in an environment variable) become spaces, and
/// it is cut to `max` characters. A report holding either would be refused,
/// and this one would be made again the same way at every probe.
fn one_line(text: &str, max: usize) -> String {
    text.trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// Proxy variables in the environment, as `NAME=host:port`.
fn env_proxy() -> Option<String> {
    let found: Vec<String> = PROXY_ENV
        .iter()
        .filter_map(|&name| {
            let value = std::env::var(name).ok()?;
            let value = value.trim();
            (!value.is_empty()).then(|| format!("{name}={}", without_credentials(value)))
        })
        .collect();
    (!found.is_empty()).then(|| found.join(", "))
}

/// `http://user:secret@proxy:3128` → `http://proxy:3128`: the back office
/// needs to know a proxy is there, not its password.
pub(crate) fn without_credentials(proxy: &str) -> String {
    let (scheme, rest) = proxy.split_once("://").map_or(("", proxy), |(s, r)| (s, r));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    if scheme.is_empty() {
        rest.to_owned()
    } else {
        format!("{scheme}://{rest}")
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn os_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default()
}

#[cfg(windows)]
fn os_version() -> String {
    // `ver` prints "Microsoft Windows [Version 10.0.22631.4037]".
    let mut ver = std::process::Command::new("cmd");
    ver.args(["/C", "ver"]);
    crate::engine::helper_output(ver, HELPER_DEADLINE)
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out).into_owned();
            let start = text.find(|c: char| c.is_ascii_digit())?;
            let version: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            Some(version)
        })
        .unwrap_or_default()
}

#[cfg(not(any(target_os = "linux", target_os = "android", windows)))]
fn os_version() -> String {
    let mut uname = std::process::Command::new("uname");
    uname.arg("-r");
    crate::engine::helper_output(uname, HELPER_DEADLINE)
        .map(|out| String::from_utf8_lossy(&out).into_owned())
        .unwrap_or_default()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn default_route_mac() -> Option<MacAddress> {
    let route = std::fs::read_to_string("/proc/net/route").ok();
    let route6 = std::fs::read_to_string("/proc/net/ipv6_route").ok();
    let iface = route
        .as_deref()
        .and_then(default_route_interface)
        .or_else(|| route6.as_deref().and_then(default_route6_interface))?;
    let address = std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).ok()?;
    MacAddress::parse(address.trim()).ok()
}

/// The PowerShell that prints the MAC of the adapter the lowest-metric
/// default route (IPv4, else IPv6) leaves through, as `00-15-5D-01-02-03`.
#[cfg(windows)]
const DEFAULT_ROUTE_MAC_PS: &str = "$r = Get-NetRoute -DestinationPrefix '0.0.0.0/0','::/0' \
    -ErrorAction SilentlyContinue | Sort-Object { $_.DestinationPrefix -ne '0.0.0.0/0' }, \
    RouteMetric | Select-Object -First 1; if ($r) { (Get-NetAdapter -InterfaceIndex $r.ifIndex \
    -ErrorAction SilentlyContinue).MacAddress }";

#[cfg(windows)]
fn default_route_mac() -> Option<MacAddress> {
    // The NetTCPIP and NetAdapter modules (Windows 8 and later): their
    // output is the same in every display language, unlike `getmac`'s or
    // `ipconfig`'s.
    let mut ps = std::process::Command::new("powershell");
    ps.args([
        "-NoProfile",
        "-NonInteractive",
        "-Command",
        DEFAULT_ROUTE_MAC_PS,
    ]);
    let out = crate::engine::helper_output(ps, HELPER_DEADLINE)?;
    mac_from_windows(&String::from_utf8_lossy(&out))
}

/// A MAC as Windows prints it (`00-15-5D-01-02-03`), the first line that is
/// one.
#[cfg(any(windows, test))]
fn mac_from_windows(text: &str) -> Option<MacAddress> {
    text.lines()
        .map(str::trim)
        .find_map(|line| MacAddress::parse(&line.replace('-', ":").to_ascii_lowercase()).ok())
}

#[cfg(not(any(target_os = "linux", target_os = "android", windows)))]
fn default_route_mac() -> Option<MacAddress> {
    // Not read on this platform yet: left out rather than guessed.
    None
}

/// The interface of the lowest-metric IPv4 default route in `/proc/net/route`.
pub fn default_route_interface(table: &str) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, flags, metric, mask) = (
                cols.first()?,
                cols.get(1)?,
                cols.get(3)?,
                cols.get(6)?,
                cols.get(7)?,
            );
            let up = u32::from_str_radix(flags, 16).ok()? & 1 == 1;
            (up && *dest == "00000000" && *mask == "00000000" && safe_iface(iface)).then(|| {
                (
                    metric.parse::<u32>().unwrap_or(u32::MAX),
                    (*iface).to_owned(),
                )
            })
        })
        .min()
        .map(|(_, iface)| iface)
}

/// The interface of the lowest-metric IPv6 default route in `/proc/net/ipv6_route`.
pub fn default_route6_interface(table: &str) -> Option<String> {
    table
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (dest, len, metric, iface) =
                (cols.first()?, cols.get(1)?, cols.get(5)?, cols.get(9)?);
            let default = dest.bytes().all(|b| b == b'0') && *len == "00";
            (default && *iface != "lo" && safe_iface(iface)).then(|| {
                (
                    u32::from_str_radix(metric, 16).unwrap_or(u32::MAX),
                    (*iface).to_owned(),
                )
            })
        })
        .min()
        .map(|(_, iface)| iface)
}

/// An interface name is used in a /sys path: no separators or dots.
fn safe_iface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_@".contains(&b))
}

/// The key of `WinINet`'s per-user proxy settings, under a user's hive.
#[cfg(windows)]
const INTERNET_SETTINGS: &str = r"Software\Microsoft\Windows\CurrentVersion\Internet Settings";

/// How many signed-in users' proxy settings are read at most.
#[cfg(windows)]
const MAX_USER_HIVES: usize = 8;

#[cfg(windows)]
fn reg_query(key: &str) -> Option<String> {
    let mut reg = std::process::Command::new("reg");
    reg.args(["query", key]);
    let out = crate::engine::helper_output(reg, HELPER_DEADLINE)?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(windows)]
fn system_proxy() -> Option<String> {
    // Read with `reg` to stay free of registry bindings. The current
    // user's WinINet settings first. Run as a service (LocalSystem) that
    // user is SYSTEM, whose settings say nothing about the people using
    // the machine: the signed-in users' hives (loaded under HKU) are read
    // too, and WinHTTP's machine-wide proxy, which services use.
    let mut found: Vec<String> = reg_query(&format!(r"HKCU\{INTERNET_SETTINGS}"))
        .map(|text| internet_settings_proxy(&text))
        .unwrap_or_default();
    if let Some(users) = reg_query("HKU") {
        for sid in loaded_user_hives(&users).into_iter().take(MAX_USER_HIVES) {
            let Some(text) = reg_query(&format!(r"HKU\{sid}\{INTERNET_SETTINGS}")) else {
                continue;
            };
            for setting in internet_settings_proxy(&text) {
                let setting = format!("{sid}: {setting}");
                if !found.contains(&setting) {
                    found.push(setting);
                }
            }
        }
    }
    if let Some(text) = reg_query(&format!(r"HKLM\{INTERNET_SETTINGS}\Connections"))
        && let Some(proxy) = winhttp_proxy(&text)
    {
        found.push(format!("WinHTTP={}", without_credentials(&proxy)));
    }
    (!found.is_empty()).then(|| found.join(", "))
}

/// The proxy settings in `reg query` output of a `WinINet` `Internet
/// Settings` key: the proxy server when enabled, and a PAC URL.
#[cfg(any(windows, test))]
fn internet_settings_proxy(text: &str) -> Vec<String> {
    let value = |name: &str| {
        text.lines().find_map(|line| {
            let mut cols = line.split_whitespace();
            (cols.next()? == name).then(|| cols.nth(1).map(str::to_owned))?
        })
    };
    let enabled = value("ProxyEnable").is_some_and(|v| v == "0x1");
    let mut found = Vec::new();
    if enabled && let Some(server) = value("ProxyServer") {
        found.push(format!("ProxyServer={}", without_credentials(&server)));
    }
    if let Some(pac) = value("AutoConfigURL") {
        found.push(format!("AutoConfigURL={}", without_credentials(&pac)));
    }
    found
}

/// The signed-in users' hives in `reg query HKU` output: their SIDs
/// (`S-1-5-21-…`), without the `_Classes` hives and the service accounts.
#[cfg(any(windows, test))]
fn loaded_user_hives(text: &str) -> Vec<String> {
    let mut sids: Vec<String> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix(r"HKEY_USERS\"))
        .filter(|sid| {
            sid.starts_with("S-1-5-21-")
                && !sid.ends_with("_Classes")
                && sid
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-' || b == b'S')
        })
        .map(str::to_owned)
        .collect();
    sids.dedup();
    sids
}

/// `WinHTTP`'s proxy server from `reg query` output of the `Connections` key:
/// its `WinHttpSettings` value, a little-endian structure of a version, a
/// counter, flags (2: a proxy is set), the proxy list's length and bytes,
/// then the bypass list's. `None` for direct access or an unreadable value.
#[cfg(any(windows, test))]
fn winhttp_proxy(text: &str) -> Option<String> {
    const PROXY_TYPE_PROXY: u32 = 2;
    let hex = text.lines().find_map(|line| {
        let mut cols = line.split_whitespace();
        (cols.next()? == "WinHttpSettings" && cols.next()? == "REG_BINARY").then(|| cols.next())?
    })?;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    if word(8)? & PROXY_TYPE_PROXY == 0 {
        return None;
    }
    let len = usize::try_from(word(12)?).ok()?;
    let proxy = std::str::from_utf8(bytes.get(16..16usize.checked_add(len)?)?).ok()?;
    let proxy = proxy.trim();
    (!proxy.is_empty()).then(|| proxy.to_owned())
}

#[cfg(not(windows))]
fn system_proxy() -> Option<String> {
    // Desktop Linux keeps proxies in per-desktop settings, Android in the app's
    // hands: nothing system-wide to read here.
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wininet_settings_name_the_enabled_proxy_and_a_pac_without_credentials() {
        let text = "\r\nHKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings\r\n\
            \x20   ProxyEnable    REG_DWORD    0x1\r\n\
            \x20   ProxyServer    REG_SZ    http://u:pw@10.0.0.8:3128\r\n\
            \x20   AutoConfigURL    REG_SZ    http://wpad.corp/proxy.pac\r\n";
        assert_eq!(
            internet_settings_proxy(text),
            [
                "ProxyServer=http://10.0.0.8:3128",
                "AutoConfigURL=http://wpad.corp/proxy.pac"
            ]
        );
        let off = text.replace("0x1", "0x0");
        assert_eq!(
            internet_settings_proxy(&off),
            ["AutoConfigURL=http://wpad.corp/proxy.pac"]
        );
    }

    #[test]
    fn a_windows_mac_is_read_in_its_own_notation() {
        assert_eq!(
            mac_from_windows("\r\n00-15-5D-01-02-0A\r\n").map(|m| m.to_string()),
            Some("00:15:5d:01:02:0a".to_owned())
        );
        assert_eq!(mac_from_windows(""), None);
        assert_eq!(mac_from_windows("Get-NetRoute : not recognized"), None);
    }

    #[test]
    fn signed_in_users_hives_are_found_under_hku() {
        let text = "\r\nHKEY_USERS\\.DEFAULT\r\nHKEY_USERS\\S-1-5-19\r\nHKEY_USERS\\S-1-5-20\r\n\
            HKEY_USERS\\S-1-5-21-1004336348-1177238915-682003330-1001\r\n\
            HKEY_USERS\\S-1-5-21-1004336348-1177238915-682003330-1001_Classes\r\n\
            HKEY_USERS\\S-1-5-18\r\n";
        assert_eq!(
            loaded_user_hives(text),
            ["S-1-5-21-1004336348-1177238915-682003330-1001"]
        );
    }

    #[test]
    fn winhttp_settings_give_the_machine_proxy() {
        // `netsh winhttp set proxy proxy:8080 "<local>"` writes this.
        let mut value = vec![0x18, 0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0, 10, 0, 0, 0];
        value.extend_from_slice(b"proxy:8080");
        value.extend_from_slice(&[7, 0, 0, 0]);
        value.extend_from_slice(b"<local>");
        let hex = value.iter().fold(String::new(), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02X}");
            hex
        });
        let text = format!(
            "\r\nHKEY_LOCAL_MACHINE\\...\\Connections\r\n    WinHttpSettings    REG_BINARY    {hex}\r\n"
        );
        assert_eq!(winhttp_proxy(&text).as_deref(), Some("proxy:8080"));
        // Direct access (flags 1), and values cut short, are no proxy.
        let direct =
            "    WinHttpSettings    REG_BINARY    1800000000000000010000000000000000000000\r\n";
        assert_eq!(winhttp_proxy(direct), None);
        let cut = format!("    WinHttpSettings    REG_BINARY    {}\r\n", &hex[..30]);
        assert_eq!(winhttp_proxy(&cut), None);
        assert_eq!(winhttp_proxy("nothing"), None);
    }

    #[test]
    fn default_route_is_found_in_proc_net_route() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
            eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth0"));
        assert_eq!(
            default_route_interface("Iface\n../x\t00000000\t0\t0003\t0\t0\t1\t00000000\n"),
            None
        );
    }

    #[test]
    fn ipv6_default_route() {
        let table = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wlan0\n\
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert_eq!(default_route6_interface(table).as_deref(), Some("wlan0"));
    }

    #[test]
    fn proxy_credentials_are_dropped() {
        assert_eq!(
            without_credentials("http://u:secret@proxy:3128"),
            "http://proxy:3128"
        );
        assert_eq!(without_credentials("proxy:3128"), "proxy:3128");
    }

    #[derive(Debug)]
    struct Fixed;
    impl Platform for Fixed {
        fn os_version(&self) -> String {
            "x\n".repeat(100)
        }
        fn default_route_mac(&self) -> Option<MacAddress> {
            MacAddress::parse("02:00:00:00:00:01").ok()
        }
        fn local_addrs(&self) -> Vec<IpAddr> {
            (0..40u8).map(|i| IpAddr::from([10, 0, 0, i])).collect()
        }
        fn system_proxy(&self) -> Option<String> {
            None
        }
    }

    #[test]
    fn facts_fit_the_report_limits_and_mac_needs_permission() {
        let facts = collect_facts(&Fixed, false);
        assert!(facts.mac.is_none());
        assert_eq!(facts.local_addrs.len(), ReportLimits::MAX_LOCAL_ADDRS);
        assert!(facts.os_version.chars().count() <= ReportLimits::MAX_SHORT_TEXT_LEN);
        assert!(!facts.os_version.contains('\n'));
        assert!(collect_facts(&Fixed, true).mac.is_some());
    }

    #[test]
    fn one_line_maps_control_characters_and_cuts_on_characters() {
        assert_eq!(one_line(" a\r\nb\tc \n", 512), "a  b c");
        let cut = one_line(&"巷".repeat(600), ReportLimits::MAX_DETAIL_LEN);
        assert_eq!(cut.chars().count(), ReportLimits::MAX_DETAIL_LEN);
    }

    #[derive(Debug)]
    struct Addrs;
    impl Platform for Addrs {
        fn os_version(&self) -> String {
            "1".to_owned()
        }
        fn default_route_mac(&self) -> Option<MacAddress> {
            None
        }
        fn local_addrs(&self) -> Vec<IpAddr> {
            [
                "192.168.1.20",
                "169.254.10.1",
                "fe80::1",
                "2001:db8::21a:2bff:fe3c:4d5e",
            ]
            .iter()
            .map(|a| a.parse().expect("address"))
            .collect()
        }
        fn system_proxy(&self) -> Option<String> {
            None
        }
    }

    #[test]
    fn link_local_and_mac_derived_addresses_are_left_out() {
        let parse = |a: &str| a.parse::<IpAddr>().expect("address");
        let eui64 = parse("2001:db8::21a:2bff:fe3c:4d5e");
        for (addr, without_mac, with_mac) in [
            ("192.168.1.20", true, true),
            ("169.254.10.1", false, false),
            ("fe80::1", false, false),
            ("fe80::21a:2bff:fe3c:4d5e", false, false),
            ("2001:db8::8d3c:91e2:7a10:5b4f", true, true),
            ("2001:db8::21a:2bff:fe3c:4d5e", false, true),
        ] {
            let addr = parse(addr);
            assert_eq!(
                shareable_addr(addr, false),
                without_mac,
                "{addr} without MAC"
            );
            assert_eq!(shareable_addr(addr, true), with_mac, "{addr} with MAC");
        }

        assert_eq!(
            collect_facts(&Addrs, false).local_addrs,
            [parse("192.168.1.20")]
        );
        assert_eq!(
            collect_facts(&Addrs, true).local_addrs,
            [parse("192.168.1.20"), eui64]
        );
    }
}
