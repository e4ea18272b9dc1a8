use super::*;
use proptest::prelude::*;

const S: &str = "/c/simple";
const A: &str = "/c/advanced";

fn strings(diags: &[Diagnostic]) -> Vec<String> {
    diags.iter().map(ToString::to_string).collect()
}

fn simple(text: &str) -> (Vec<(usize, SimpleDoor)>, Vec<String>) {
    let mut diags = Vec::new();
    let entries = parse_simple(Path::new(S), text, &mut diags);
    (
        entries.into_iter().map(|e| (e.line, e.door)).collect(),
        strings(&diags),
    )
}

fn advanced(text: &str) -> (Vec<(usize, AdvancedDoor)>, Vec<String>) {
    let mut diags = Vec::new();
    let entries = parse_advanced(Path::new(A), text, &mut diags);
    (
        entries.into_iter().map(|e| (e.line, e.door)).collect(),
        strings(&diags),
    )
}

/// Diagnostics of both lists and of the checks between them.
fn both(simple_text: &str, advanced_text: &str) -> Vec<String> {
    let mut diags = Vec::new();
    let mut simple = List::new(Path::new(S));
    let mut advanced = List::new(Path::new(A));
    simple.entries = parse_simple(&simple.file, simple_text, &mut diags);
    advanced.entries = parse_advanced(&advanced.file, advanced_text, &mut diags);
    cross_check(&simple, &advanced, &mut diags);
    strings(&diags)
}

fn door(protected: u16, sequence: &[KnockPort]) -> SimpleDoor {
    SimpleDoor {
        protected,
        sequence: sequence.to_vec(),
    }
}

fn adoor(protected: u16, knock_port: u16, open: &str, close: &str) -> AdvancedDoor {
    AdvancedDoor {
        protected,
        knock_port,
        open_secret: Secret::new(open),
        close_secret: Secret::new(close),
    }
}

#[test]
fn simple_entries_with_comments_and_several_per_line() {
    let text = "# doors\n22:7000,9000,8000   # ssh\n\n 23:2,1/udp,7/TCP\t24:9,8,7/UDP #x 25:1\r\n";
    assert_eq!(
        simple(text),
        (
            vec![
                (
                    2,
                    door(
                        22,
                        &[
                            KnockPort::tcp(7000),
                            KnockPort::tcp(9000),
                            KnockPort::tcp(8000)
                        ]
                    )
                ),
                (
                    4,
                    door(
                        23,
                        &[KnockPort::tcp(2), KnockPort::udp(1), KnockPort::tcp(7)]
                    )
                ),
                (
                    4,
                    door(
                        24,
                        &[KnockPort::tcp(9), KnockPort::tcp(8), KnockPort::udp(7)]
                    )
                ),
            ],
            vec![]
        )
    );
}

#[test]
fn simple_format_errors() {
    let format = "simple lines are PORT:KNOCKPORT,KNOCKPORT,... (e.g. 22:7000,9000,8000)";
    assert_eq!(
        simple(
            "22,2000,hipjazz,superawesome\n22,2000,hip:jazz,superawesome\n22\n22,7000,9000,8000\n"
        )
        .1,
        [
            format!("{S}:1: error: this is an advanced-mode line; {format}"),
            format!("{S}:2: error: this is an advanced-mode line; {format}"),
            format!("{S}:3: error: missing ':' after the protected port; {format}"),
            format!("{S}:4: error: missing ':' after the protected port; {format}"),
        ]
    );
}

#[test]
fn simple_port_errors() {
    let text = ":7,9,8\nssh:7,9,8\n0:7,9,8\n65536:7,9,8\n22:\n22:7,,8\n22:7,9,\n22:7,x9,8\n\
                22:7,99999,8\n22:7,9/sctp,8\n22:7,9/,8\n";
    assert_eq!(
        simple(text).1,
        [
            format!("{S}:1: error: the protected port is empty"),
            format!("{S}:2: error: the protected port is not a number; ports are written as digits, 1 to 65535"),
            format!("{S}:3: error: the protected port (0) is out of range; ports are 1 to 65535"),
            format!("{S}:4: error: the protected port (65536) is out of range; ports are 1 to 65535"),
            format!("{S}:5: error: empty knock sequence; list the knock ports after ':'"),
            format!("{S}:6: error: the knock port at position 2 is empty"),
            format!("{S}:7: error: the knock port at position 3 is empty"),
            format!("{S}:8: error: the knock port at position 2 is not a number; ports are written as digits, 1 to 65535"),
            format!("{S}:9: error: the knock port at position 2 (99999) is out of range; ports are 1 to 65535"),
            format!("{S}:10: error: the knock port at position 2 has an unknown protocol; write PORT or PORT/tcp for TCP, PORT/udp for UDP"),
            format!("{S}:11: error: the knock port at position 2 has an unknown protocol; write PORT or PORT/tcp for TCP, PORT/udp for UDP"),
        ]
    );
}

#[test]
fn sequence_length_and_repeats() {
    let ports = |n: u16| {
        (0..n)
            .map(|i| (40000 - i).to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (doors, diags) = simple(&format!("22:{}\n23:{}\n", ports(32), ports(33)));
    assert_eq!(doors.len(), 1);
    assert_eq!(
        diags,
        [format!(
            "{S}:2: error: the sequence has 33 knock ports; at most 32 are allowed"
        )]
    );
    assert_eq!(
        simple("22:9,7,7,8\n23:9,7/udp,7/udp\n24:9,7/udp,7,8\n").1,
        [
            format!("{S}:1: error: knock port 7/tcp is repeated at positions 2 and 3; a repeat cannot be told from a retransmission"),
            format!("{S}:2: error: knock port 7/udp is repeated at positions 2 and 3; a repeat cannot be told from a retransmission"),
        ]
    );
}

/// The warning about a two-port sequence.
const TWO_PORTS: &str = "a 2-port sequence: a scan that tries only its knock ports, in a random \
    order, opens the door once in 2; use three or more knock ports (four: once in 24)";

#[test]
fn simple_warnings() {
    let (doors, diags) = simple("22:7000\n23:7/udp\n24:1,2,3\n25:3,2,1\n26:1,2/udp\n");
    assert_eq!(doors.len(), 5);
    let ascending = "warning: the sequence is strictly ascending, so a sequential port scan walks it; put the knock ports out of order";
    assert_eq!(
        diags,
        [
            format!("{S}:1: warning: a one-port sequence: any single packet to 7000/tcp (a port scan, say) opens the door; use three or more knock ports"),
            format!("{S}:2: warning: a one-port sequence: any single packet to 7/udp (a port scan, say) opens the door; use three or more knock ports"),
            format!("{S}:3: {ascending}"),
            format!("{S}:5: warning: {TWO_PORTS}"),
            format!("{S}:5: {ascending}"),
        ]
    );
}

#[test]
fn a_list_without_doors_is_an_error() {
    assert_eq!(
        simple("# nothing yet\n\n").1,
        [format!("{S}: error: has no door, but simple mode is on; add a line like 22:7000,9000,8000 or set FW_PORTKNOCK_SIMPLE=no")]
    );
    assert_eq!(
        advanced("").1,
        [format!("{A}: error: has no door, but advanced mode is on; add a line like 22,2000,OPENSECRET,CLOSESECRET or set FW_PORTKNOCK_ADVANCED=no")]
    );
}

#[test]
fn advanced_entries_keep_secrets_whole() {
    let text = "# d\n22,2000,hip#jazz:1,superawesome  23,2001,x:y~z!@$%^&*()-,October2024 # c\n";
    assert_eq!(
        advanced(text),
        (
            vec![
                (2, adoor(22, 2000, "hip#jazz:1", "superawesome")),
                (2, adoor(23, 2001, "x:y~z!@$%^&*()-", "October2024")),
            ],
            vec![]
        )
    );
}

#[test]
fn advanced_format_and_field_errors() {
    let format = "advanced lines are PORT,KNOCKPORT,OPENSECRET,CLOSESECRET";
    let text = "22:7000,9000,8000\n22,2000,hipjazzhip\n22,2000,a,b,c\n,2000,openopen,closeclose\n\
                22,,openopen,closeclose\n22,2000,,closeclose\n22,2000,openopen,\n\
                secret99,2000,openopen,closeclose\n22,70000,openopen,closeclose\n\
                22,2000,open\u{1}open,clöseclose\n";
    assert_eq!(
        advanced(text).1,
        [
            format!("{A}:1: error: this is a simple-mode line; {format}"),
            format!("{A}:2: error: expected 4 fields, found 3; {format}"),
            format!("{A}:3: error: expected 4 fields, found 5; {format}"),
            format!("{A}:4: error: the protected port is empty"),
            format!("{A}:5: error: the knock port is empty"),
            format!("{A}:6: error: the open secret is empty"),
            format!("{A}:7: error: the close secret is empty"),
            format!("{A}:8: error: the protected port is not a number; ports are written as digits, 1 to 65535"),
            format!("{A}:9: error: the knock port (70000) is out of range; ports are 1 to 65535"),
            format!("{A}:10: error: the open secret has a character that is not printable ASCII; use letters, digits and punctuation"),
            format!("{A}:10: error: the close secret has a character that is not printable ASCII; use letters, digits and punctuation"),
        ]
    );
}

#[test]
fn advanced_secret_checks() {
    let (doors, diags) = advanced("22,2000,samesame,samesame\n23,2001,hipjazz,elite\n");
    assert_eq!(doors, [(2, adoor(23, 2001, "hipjazz", "elite"))]);
    let short = |which| {
        format!("{A}:2: warning: the {which} secret is shorter than 8 characters; one captured knock lets anyone guess a short secret offline")
    };
    assert_eq!(
        diags,
        [
            format!("{A}:1: error: the open secret and the close secret are the same, so a close could not be told from an open; choose two different secrets"),
            short("open"),
            short("close"),
        ]
    );
}

#[test]
fn secrets_never_reach_a_message() {
    let secret = "Zq9secretZq9";
    let lines = [
        format!("22,2000,{secret},{secret}"),
        format!("23,2001,{secret},b"),
        format!("24,2002,a,{secret}"),
        format!("{secret},2000,a,b"),
        format!("22,{secret},a,b"),
        format!("22:{secret}"),
        format!("22:7,{secret}/udp"),
        format!("22:7,9/{secret}"),
        format!("{secret}:7,9,8"),
        format!("22,2000,{secret}"),
        format!("22,2000,{secret}\u{1},b"),
    ]
    .join("\n");
    let all = both(&lines, &lines).join("\n");
    assert!(!all.contains(secret), "{all}");
}

/// An OTP is the MAC of the source and the minute only: it is valid for every door and role
/// whose secret made it. Line 4's first door opens with line 1's close secret, its second
/// shares line 1's open secret, and line 5's door has line 2's secrets swapped.
#[test]
fn a_secret_belongs_to_one_door_and_one_role() {
    let why = "an OTP is valid for every door that shares its secret (its MAC covers only the \
               source and the minute), so one door's OTPs would open or close the other; give \
               each door and role a secret of its own";
    assert_eq!(
        both(
            "80:7000,9000,8000\n",
            "22,2000,hipjazzhipjazz,superawesome\n23,2001,elite-october,november-rain\n\
             # comment\n24,2002,superawesome,fresh-secret-1 25,2003,hipjazzhipjazz,fresh-secret-2\n\
             26,2004,november-rain,elite-october\n"
        ),
        [
            format!("{A}:4: error: the open secret is also the close secret of the advanced door at {A}:1; {why}"),
            format!("{A}:4: error: the open secret is also the open secret of the advanced door at {A}:1; {why}"),
            format!("{A}:5: error: the open secret is also the close secret of the advanced door at {A}:2; {why}"),
            format!("{A}:5: error: the close secret is also the open secret of the advanced door at {A}:2; {why}"),
        ]
    );
}

#[test]
fn protected_port_clashes() {
    assert_eq!(
        both("22:7,9,8\n22:17,19,18\n", "22,2000,openopen1,closeclose1\n23,2001,openopen2,closeclose2 23,2002,openopen3,closeclose3\n"),
        [
            format!("{S}:2: error: port 22 is already protected by the simple door at {S}:1; remove one of the two"),
            format!("{A}:1: error: port 22 is already protected by the simple door at {S}:1; a port can be protected by one mode only"),
            format!("{A}:2: error: port 23 is already protected by the advanced door at {A}:2; remove one of the two"),
        ]
    );
}

#[test]
fn knock_port_that_is_a_protected_port() {
    assert_eq!(
        both("22:7,22,8,22\n23:9,7,2222/udp\n", "2222,2000,openopen1,closeclose1\n2223,23,openopen2,closeclose2\n2224,2224,openopen3,closeclose3\n"),
        [
            format!("{S}:1: error: knock port 22 is the port this door protects; choose another knock port"),
            format!("{S}:2: error: knock port 2222 is protected by the advanced door at {A}:1; choose a knock port that no door protects"),
            format!("{A}:2: error: knock port 23 is protected by the simple door at {S}:2; choose a knock port that no door protects"),
            format!("{A}:3: error: knock port 2224 is the port this door protects; choose another knock port"),
        ]
    );
}

#[test]
fn same_sequence_twice() {
    assert_eq!(
        both("22:7,9,8\n23:9,7,8/udp 24:7,9,8\n", ""),
        [
            format!("{A}: error: has no door, but advanced mode is on; add a line like 22,2000,OPENSECRET,CLOSESECRET or set FW_PORTKNOCK_ADVANCED=no"),
            format!("{S}:2: error: the same knock sequence as the simple door at {S}:1; give each door its own sequence"),
        ]
    );
}

#[test]
fn doors_armed_by_the_same_knock_are_warned_about() {
    // 22 and 23 end on the same knock, which is fine; 24 and 25 share all but the last knock;
    // 26's next-to-last knock is 27's first, and 27 is a two-knock door.
    assert_eq!(
        both(
            "22:107,109,108\n23:109,106,108\n24:113,112,111\n25:113,112,114\n26:123,122,121\n27:122,120\n",
            "80,2000,openopen,closeclose\n"
        ),
        [
            format!("{S}:6: warning: {TWO_PORTS}"),
            format!(
                "{S}:3: warning: the knock before its last also arms the simple door at \
                 {S}:4, and a source has one armed door at a time, so the daemon opens this \
                 one itself, a moment after its final knock: a connection made at once may wait a \
                 second for TCP to retry; make the two sequences differ earlier"
            ),
            format!(
                "{S}:5: warning: the knock before its last also arms the simple door at \
                 {S}:6, and a source has one armed door at a time, so the daemon opens this \
                 one itself, a moment after its final knock: a connection made at once may wait a \
                 second for TCP to retry; make the two sequences differ earlier"
            ),
        ]
    );
}

#[test]
fn shared_udp_knock_ports() {
    assert_eq!(
        both(
            "22:7,8000/udp,9\n23:10,8000/udp,7\n24:9000,7,8\n",
            "80,2000,openopen1,closeclose1\n81,2000,openopen2,closeclose2\n82,8000,openopen3,closeclose3\n83,9000,openopen4,closeclose4\n"
        ),
        [
            format!("{A}:2: error: knock port 2000 is already a UDP knock port of the advanced door at {A}:1; give this door a knock port of its own"),
            format!("{A}:3: error: knock port 8000 is already a UDP knock port of the simple door at {S}:1; give this door a knock port of its own"),
        ]
    );
}

/// One to five simple doors that pass every check: protected ports below 1000, knock ports above 1001,
/// distinct sequences.
fn valid_simple() -> impl Strategy<Value = Vec<SimpleDoor>> {
    let knock = (any::<bool>(), 1002..=u16::MAX).prop_map(|(udp, port)| {
        if udp {
            KnockPort::udp(port)
        } else {
            KnockPort::tcp(port)
        }
    });
    let sequence = prop::collection::vec(knock, 1..=MAX_SEQUENCE).prop_map(|mut s| {
        s.dedup();
        s
    });
    // At least one door: an enabled mode with an empty list is an error.
    prop::collection::btree_map(1..1000u16, sequence, 1..6)
        .prop_map(|doors| {
            doors
                .into_iter()
                .map(|(protected, sequence)| SimpleDoor {
                    protected,
                    sequence,
                })
                .collect::<Vec<_>>()
        })
        .prop_filter("distinct sequences", |doors: &Vec<SimpleDoor>| {
            doors
                .iter()
                .map(|d| &d.sequence)
                .collect::<std::collections::HashSet<_>>()
                .len()
                == doors.len()
        })
}

/// The doors as list lines, each knock port written `PORT/PROTO`.
fn render_simple(doors: &[SimpleDoor]) -> String {
    doors
        .iter()
        .map(|d| {
            format!(
                "{}:{}\n",
                d.protected,
                d.sequence
                    .iter()
                    .map(KnockPort::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect()
}

/// Printable ASCII without ',' and white space.
const SECRET: &str = "[!-+\\--~]{1,40}";

proptest! {
    #[test]
    fn simple_doors_round_trip(doors in valid_simple()) {
        let (parsed, diags) = simple(&render_simple(&doors));
        prop_assert_eq!(parsed.into_iter().map(|(_, d)| d).collect::<Vec<_>>(), doors);
        prop_assert!(diags.iter().all(|d| d.contains(": warning: ")), "{:?}", diags);
    }

    #[test]
    fn advanced_doors_round_trip(
        doors in prop::collection::btree_map(1..1000u16, (SECRET, SECRET), 1..6),
        knock_base in 1000..=60000u16,
    ) {
        let doors: Vec<AdvancedDoor> = (knock_base..)
            .zip(doors)
            .filter(|(_, (_, (open, close)))| open != close)
            .map(|(knock, (protected, (open, close)))| adoor(protected, knock, &open, &close))
            .collect();
        let text: String = doors
            .iter()
            .map(|d| {
                let secret = |s: &Secret| String::from_utf8_lossy(s.expose()).into_owned();
                format!("{},{},{},{}\n", d.protected, d.knock_port, secret(&d.open_secret), secret(&d.close_secret))
            })
            .collect();
        let (parsed, diags) = advanced(&text);
        prop_assert_eq!(parsed.into_iter().map(|(_, d)| d).collect::<Vec<_>>(), doors);
        prop_assert!(diags.iter().all(|d| d.contains(": warning: ")), "{:?}", diags);
    }

    #[test]
    fn valid_doors_pass_the_cross_checks(doors in valid_simple()) {
        let diags = both(&render_simple(&doors), "1000,1001,openopen,closeclose\n");
        prop_assert!(diags.iter().all(|d| d.contains(": warning: ")), "{:?}", diags);
    }

    #[test]
    fn arbitrary_text_never_panics(a in any::<String>(), b in any::<String>()) {
        both(&a, &b);
    }

    #[test]
    fn list_like_text_never_panics(a in "[0-9:,/udptcp# \n]{0,80}", b in "[0-9:,a-z# \n]{0,80}") {
        both(&a, &b);
        both(&b, &a);
    }
}
