//! A raw-socket packet flooder (IP_HDRINCL), run on a thread inside the client namespace.
//!
//! It sends ONLY to the server namespace's address ([`SERVER4`]/[`SERVER6`]), with spoofed
//! sources ONLY from ranges that no host of the lab uses:
//! - IPv4: 198.18.2.0 – 198.19.255.255 ([`SPOOF4_FIRST`], [`SPOOF4_COUNT`] addresses), so never
//!   the server or clients (198.18.0.0/24) nor the legitimate knock sources (198.18.1.0/24);
//! - IPv6: fd00:5eed:0:0:8000::/65 ([`SPOOF6_BASE`]), never the lab's hosts (fd00:5eed::1, ::2…).
//!
//! The server namespace routes both ranges into a blackhole ([`super::systems::sink_spoofed`]):
//! replies (RSTs) to spoofed sources die there instead of flooding neighbour discovery.
//! Every flood is bounded by a packet count and/or a duration and stops on drop.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use nix::sched::{setns, CloneFlags};
use portknock::netns::{Netns, SERVER4, SERVER6};

/// First spoofed IPv4 source: 198.18.2.0.
pub const SPOOF4_FIRST: u32 = u32::from_be_bytes([198, 18, 2, 0]);
/// Number of spoofed IPv4 sources: up to 198.19.255.255 inclusive.
pub const SPOOF4_COUNT: u32 = (1 << 17) - 512;
/// Base of the spoofed IPv6 sources: fd00:5eed:0:0:8000::/65.
pub const SPOOF6_BASE: u128 = 0xfd00_5eed_0000_0000_8000_0000_0000_0000;
/// The ranges the server blackholes, in `ip route` syntax.
pub const SPOOF4_ROUTE: &str = "198.18.0.0/15";
pub const SPOOF6_ROUTE: &str = "fd00:5eed:0:0:8000::/65";

/// Packets per `sendmmsg` call.
const BATCH: usize = 32;
/// Room for the largest packet built here (IPv4 + UDP + 65-byte OTP).
const SLOT: usize = 128;
/// A flood never runs longer than this, whatever its plan says.
pub const HARD_LIMIT: Duration = Duration::from_secs(60);

/// What the flood sends.
#[derive(Debug, Clone)]
pub enum Kind {
    /// TCP SYNs from random spoofed IPv4 sources: a share `knock_share` of them to a random
    /// one of `knock_ports`, the rest to a random port 1–65535.
    Syn {
        knock_ports: Vec<u16>,
        knock_share: f64,
    },
    /// Well-formed but wrong OTP knocks: UDP datagrams of 64 random lowercase hex digits and
    /// `\n` (65 bytes) from random spoofed IPv4 sources to `port`.
    OtpJunk { port: u16 },
    /// One SYN to `port` from each of `count` distinct IPv6 sources `SPOOF6_BASE + i`.
    FirstKnocks6 { port: u16, count: u64 },
}

/// A flood: what, how fast (`None`: as fast as it goes), for how long at most.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: Kind,
    pub rate: Option<u64>,
    pub max: Duration,
    pub seed: u64,
    /// Keep every SYN sent to a knock port (for [`super::sim`]).
    pub record: bool,
}

/// A knock of the flood, as sent: source (IPv4, host order), port, ms since the flood began.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub source: u32,
    pub port: u16,
    pub at_ms: u32,
}

/// What a flood did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub sent: u64,
    pub send_errors: u64,
    pub elapsed: Duration,
    pub knocks: Vec<Sent>,
    /// Why it could not start, if it could not.
    pub failed: Option<String>,
}

impl Outcome {
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// SplitMix64: a small, fast, seedable generator; the flood needs no more.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A running flood; stops (and is joined) on [`Flooder::finish`] or drop.
pub struct Flooder {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Outcome>>,
}

impl Flooder {
    /// Starts `plan` on a thread inside `ns` (the client namespace).
    pub fn start(ns: &Netns, plan: Plan) -> Flooder {
        let stop = Arc::new(AtomicBool::new(false));
        let path = format!("/var/run/netns/{}", ns.name);
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let entered = std::fs::File::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|f| setns(f, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string()));
            if let Err(e) = entered {
                return Outcome {
                    failed: Some(format!("cannot enter {path}: {e}")),
                    ..Outcome::default()
                };
            }
            run(&plan, &flag)
        });
        Flooder {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the flood now and returns what it did.
    pub fn finish(mut self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits until the flood ends by itself (its count or duration), then returns what it did.
    pub fn wait(mut self) -> Outcome {
        self.join()
    }

    fn join(&mut self) -> Outcome {
        self.handle
            .take()
            .map(|h| {
                h.join().unwrap_or_else(|_| Outcome {
                    failed: Some("the flood thread panicked".into()),
                    ..Outcome::default()
                })
            })
            .unwrap_or_default()
    }
}

impl Drop for Flooder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.join();
    }
}

/// A raw socket (header included) and the destination every packet goes to.
struct Raw {
    fd: i32,
    v6: bool,
    dst4: libc::sockaddr_in,
    dst6: libc::sockaddr_in6,
}

impl Raw {
    fn open(v6: bool) -> Result<Raw, String> {
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain socket(2) call; the descriptor is owned by Raw and closed on drop.
        let fd = unsafe { libc::socket(family, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(format!(
                "raw socket: {} (needs root)",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: zeroed sockaddr structs are valid; the fields set below make them complete.
        let mut dst4: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        dst4.sin_family = libc::AF_INET as libc::sa_family_t;
        dst4.sin_addr.s_addr = u32::from_ne_bytes(server4().octets());
        // SAFETY: as above.
        let mut dst6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        dst6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        dst6.sin6_addr.s6_addr = server6().octets();
        Ok(Raw { fd, v6, dst4, dst6 })
    }

    /// Sends `packets` (each `slots[i][..lens[i]]`) in one sendmmsg; returns how many went.
    fn send(&mut self, slots: &mut [[u8; SLOT]], lens: &[usize]) -> std::io::Result<usize> {
        let n = lens.len();
        let (name, namelen) = if self.v6 {
            (
                &mut self.dst6 as *mut libc::sockaddr_in6 as *mut libc::c_void,
                std::mem::size_of::<libc::sockaddr_in6>() as u32,
            )
        } else {
            (
                &mut self.dst4 as *mut libc::sockaddr_in as *mut libc::c_void,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        let mut iov: Vec<libc::iovec> = slots[..n]
            .iter_mut()
            .zip(lens)
            .map(|(s, &len)| libc::iovec {
                iov_base: s.as_mut_ptr() as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: a zeroed msghdr is valid; name and iov point into live buffers.
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                h.msg_name = name;
                h.msg_namelen = namelen;
                h.msg_iov = v as *mut libc::iovec;
                h.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: h,
                    msg_len: 0,
                }
            })
            .collect();
        // SAFETY: msgs, iov, slots and the destination outlive the call; n ≤ msgs.len().
        let r = unsafe { libc::sendmmsg(self.fd, msgs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: fd was opened by Raw::open and is closed once.
        unsafe { libc::close(self.fd) };
    }
}

pub fn server4() -> Ipv4Addr {
    SERVER4.parse().expect("server address")
}

pub fn server6() -> Ipv6Addr {
    SERVER6.parse().expect("server address")
}

/// The spoofed IPv6 source of index `i`.
pub fn spoof6(i: u64) -> Ipv6Addr {
    Ipv6Addr::from(SPOOF6_BASE | u128::from(i & ((1 << 63) - 1)))
}

fn run(plan: &Plan, stop: &AtomicBool) -> Outcome {
    let v6 = matches!(plan.kind, Kind::FirstKnocks6 { .. });
    let mut raw = match Raw::open(v6) {
        Ok(r) => r,
        Err(e) => {
            return Outcome {
                failed: Some(e),
                ..Outcome::default()
            }
        }
    };
    let limit = plan.max.min(HARD_LIMIT);
    let count_limit = match plan.kind {
        Kind::FirstKnocks6 { count, .. } => count,
        _ => u64::MAX,
    };
    let mut rng = Rng::new(plan.seed);
    let mut slots = vec![[0u8; SLOT]; BATCH];
    let mut lens = Vec::with_capacity(BATCH);
    let mut batch_knocks: Vec<Option<(u32, u16)>> = Vec::with_capacity(BATCH);
    let mut out = Outcome::default();
    let start = Instant::now();
    let mut consecutive_errors = 0u32;
    while !stop.load(Ordering::Relaxed) && !super::interrupted() && out.sent < count_limit {
        let elapsed = start.elapsed();
        if elapsed >= limit {
            break;
        }
        let due = match plan.rate {
            Some(r) => ((elapsed.as_secs_f64() * r as f64) as u64).saturating_sub(out.sent),
            None => BATCH as u64,
        };
        let n = due.min(BATCH as u64).min(count_limit - out.sent) as usize;
        if n == 0 {
            thread::sleep(Duration::from_micros(100));
            continue;
        }
        lens.clear();
        batch_knocks.clear();
        for (k, slot) in slots.iter_mut().enumerate().take(n) {
            let (len, knock) = build(&plan.kind, &mut rng, out.sent + k as u64, slot);
            lens.push(len);
            batch_knocks.push(knock);
        }
        match raw.send(&mut slots, &lens) {
            Ok(sent) => {
                consecutive_errors = 0;
                if plan.record {
                    let at_ms = start.elapsed().as_millis() as u32;
                    out.knocks.extend(batch_knocks[..sent].iter().flatten().map(
                        |&(source, port)| Sent {
                            source,
                            port,
                            at_ms,
                        },
                    ));
                }
                out.sent += sent as u64;
            }
            Err(_) => {
                out.send_errors += 1;
                consecutive_errors += 1;
                if consecutive_errors > 10_000 {
                    out.failed = Some(format!(
                        "sendmmsg keeps failing: {}",
                        std::io::Error::last_os_error()
                    ));
                    break;
                }
                thread::sleep(Duration::from_micros(50));
            }
        }
    }
    out.elapsed = start.elapsed();
    out
}

/// Builds packet number `index` of the flood into `slot`; returns its length and, for a SYN
/// to a knock port, (source, port) for the record.
fn build(kind: &Kind, rng: &mut Rng, index: u64, slot: &mut [u8]) -> (usize, Option<(u32, u16)>) {
    let sport = 1024 + rng.below(64_512) as u16;
    match kind {
        Kind::Syn {
            knock_ports,
            knock_share,
        } => {
            let src = SPOOF4_FIRST + rng.below(u64::from(SPOOF4_COUNT)) as u32;
            let to_knock = !knock_ports.is_empty() && rng.unit() < *knock_share;
            let port = if to_knock {
                knock_ports[rng.below(knock_ports.len() as u64) as usize]
            } else {
                1 + rng.below(65_535) as u16
            };
            let len = PacketBuilder::ipv4(src.to_be_bytes(), server4().octets(), 64)
                .tcp(sport, port, rng.next_u64() as u32, 64_240)
                .syn()
                .write_to_slice(slot, &[])
                .expect("a SYN fits the slot");
            let knock = knock_ports.contains(&port).then_some((src, port));
            (len, knock)
        }
        Kind::OtpJunk { port } => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let src = SPOOF4_FIRST + rng.below(u64::from(SPOOF4_COUNT)) as u32;
            let mut payload = [b'\n'; 65];
            for pair in payload[..64].chunks_exact_mut(16) {
                let r = rng.next_u64();
                for (i, b) in pair.iter_mut().enumerate() {
                    *b = HEX[((r >> (4 * i)) & 0xf) as usize];
                }
            }
            let len = PacketBuilder::ipv4(src.to_be_bytes(), server4().octets(), 64)
                .udp(sport, *port)
                .write_to_slice(slot, &payload)
                .expect("an OTP datagram fits the slot");
            (len, None)
        }
        Kind::FirstKnocks6 { port, .. } => {
            let len = PacketBuilder::ipv6(spoof6(index).octets(), server6().octets(), 64)
                .tcp(sport, *port, rng.next_u64() as u32, 64_240)
                .syn()
                .write_to_slice(slot, &[])
                .expect("a SYN fits the slot");
            (len, None)
        }
    }
}
