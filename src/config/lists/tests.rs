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
    let text = "# doors\n22:7000,9000,8001   # ssh\n\n 23:2,1/udp,7/TCP\t24:9,8,7/UDP #x 25:1\r\n";
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
                            KnockPort::tcp(8001)
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
fn white_space_around_separators_is_accepted() {
    let spaced = "22: 41873, 17219, 33391/udp, 29002\n23 :7000 ,9000,\t8000\n";
    let plain = "22:41873,17219,33391/udp,29002\n23:7000,9000,8000\n";
    assert_eq!(simple(spaced), simple(plain));
    assert_eq!(simple(plain).0.len(), 2);
    let spaced =
        "22, 2000, hipjazzhipjazz ,superawesome  23, 2001,'elite-october', november-rain\n";
    let plain = "22,2000,hipjazzhipjazz,superawesome 23,2001,elite-october,november-rain\n";
    assert_eq!(advanced(spaced), advanced(plain));
    assert_eq!(advanced(plain).0.len(), 2);
}

#[test]
fn white_space_inside_a_field_is_named() {
    let text = "22,2000,hip jazz,superawesome1\n23,2001,openopen,\"close close\"\n\
                24,2002,openopen,closeclose 25,2003,openopen,closeclose\n";
    let (doors, diags) = advanced(text);
    assert_eq!(doors.len(), 2, "two doors on one line are two doors");
    let space = |line, which| {
        format!(
            "{A}:{line}: error: the {which} secret holds white space; a secret is printable \
             ASCII without white space or commas, quoted or not"
        )
    };
    assert_eq!(diags, [space(1, "open"), space(2, "close")]);
}

#[test]
fn wrong_separators_are_named_with_the_right_form() {
    let text = "22:41873;17219\n23:7000,33391:udp,9000\n24:7000:9000:8000\n25:7100,7300.7200\n";
    assert_eq!(
        simple(text).1,
        [
            format!("{S}:1: error: the knock port at position 1 holds ';', which is not a separator; knock ports are separated by commas: write 41873,17219"),
            format!("{S}:2: error: the knock port at position 2 is knockd's PORT:PROTOCOL; write 33391/udp"),
            format!("{S}:3: error: the knock port at position 1 holds ':', which is not a separator; knock ports are separated by commas: write 7000,9000,8000"),
            format!("{S}:4: error: the knock port at position 2 holds '.', which is not a separator; knock ports are separated by commas: write 7300,7200"),
        ]
    );
    assert_eq!(
        advanced("22;2000;openopen;closeclose\n").1,
        [format!("{A}:1: error: expected 4 fields, found 1; ';' is not a separator: fields are separated by commas; advanced lines are PORT,KNOCKPORT,OPENSECRET,CLOSESECRET")]
    );
}

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
fn published_example_sequences_and_secrets_are_warned_about() {
    let (doors, diags) = simple(
        "22:7000,9000,8000\n8443:7300,7100/udp,7200\n23:7000,8000/udp,9000\n24:7000,9000,8001\n",
    );
    assert_eq!(doors.len(), 4);
    let sequence = |line| {
        format!(
            "{S}:{line}: warning: this sequence is published as an example (README, examples, \
             docs), so anyone who read them can knock it; choose knock ports of your own"
        )
    };
    let ascending = format!("{S}:3: warning: the sequence is strictly ascending, so a sequential port scan walks it; put the knock ports out of order");
    assert_eq!(diags, [sequence(1), sequence(2), ascending, sequence(3)]);
    let (doors, diags) = advanced(
        "2222,2000,hipjazzhipjazz,superawesome\n3389,2001,elite-october,november-rain\n\
         22,2002,hipjazz1,\"superawesome\"\n",
    );
    assert_eq!(doors.len(), 3);
    let secret = |line, which| {
        format!(
            "{A}:{line}: warning: the {which} secret is published as an example (README, \
             examples, docs), so anyone can make its passwords; choose a long random secret of \
             your own"
        )
    };
    assert_eq!(
        diags,
        [
            secret(1, "open"),
            secret(1, "close"),
            secret(2, "open"),
            secret(2, "close"),
            secret(3, "close"),
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
    let text = "# d\n22,2000,hip#jazz:1,superawesome1  23,2001,x:y~z!@$%^&*()-,October2024 # c\n";
    assert_eq!(
        advanced(text),
        (
            vec![
                (2, adoor(22, 2000, "hip#jazz:1", "superawesome1")),
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
fn secrets_in_matching_quotes_lose_them_as_in_portknock_conf() {
    let text =
        "2023,45124,\"quotedOpen1\",\"quotedClose1\"\n2024,45125,'single-quoted',bare-secret\n\
                2025,45126,\"it's-mine\",'say-\"hi\"'\n";
    assert_eq!(
        advanced(text),
        (
            vec![
                (1, adoor(2023, 45124, "quotedOpen1", "quotedClose1")),
                (2, adoor(2024, 45125, "single-quoted", "bare-secret")),
                (3, adoor(2025, 45126, "it's-mine", "say-\"hi\"")),
            ],
            vec![]
        )
    );
}

#[test]
fn a_quote_that_is_not_a_matching_pair_is_an_error() {
    let text = "22,2000,\"unclosed,closeclose\n23,2001,openopen,unopened'\n\
                24,2002,in\"side,closeclose\n25,2003,\"one\"two\",closeclose\n\
                26,2004,'mixed\",closeclose\n27,2005,\"\",closeclose\n";
    let quote = |line, which| {
        format!(
            "{A}:{line}: error: the {which} secret has a quote that is not one of a matching pair \
             around the whole secret; write the secret bare, or whole in \"...\" or '...', \
             which are not part of it"
        )
    };
    assert_eq!(
        advanced(text),
        (
            vec![],
            vec![
                quote(1, "open"),
                quote(2, "close"),
                quote(3, "open"),
                quote(4, "open"),
                quote(5, "open"),
                format!("{A}:6: error: the open secret is empty"),
            ]
        )
    );
}

#[test]
fn advanced_secret_checks() {
    let (doors, diags) = advanced("22,2000,samesame,samesame\n23,2001,jazzhip,etile\n");
    assert_eq!(doors, [(2, adoor(23, 2001, "jazzhip", "etile"))]);
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
            "80:40123,40456,40234\n",
            "22,2000,open-one-secret,close-one-secret\n23,2001,open-two-secret,close-two-secret\n\
             # comment\n24,2002,close-one-secret,fresh-secret-1 25,2003,open-one-secret,fresh-secret-2\n\
             26,2004,close-two-secret,open-two-secret\n"
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

/// A secret as the list writes it: bare, or in the kind of quote it does not hold; `None` for
/// one that holds both kinds, which the list cannot hold.
fn written(secret: &str) -> Option<String> {
    match (secret.contains('"'), secret.contains('\'')) {
        (false, false) => Some(secret.to_string()),
        (true, false) => Some(format!("'{secret}'")),
        (false, true) => Some(format!("\"{secret}\"")),
        (true, true) => None,
    }
}

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
        let doors: Vec<(AdvancedDoor, String)> = (knock_base..)
            .zip(doors)
            .filter(|(_, (_, (open, close)))| open != close)
            .filter_map(|(knock, (protected, (open, close)))| {
                let line = format!("{protected},{knock},{},{}\n", written(&open)?, written(&close)?);
                Some((adoor(protected, knock, &open, &close), line))
            })
            .collect();
        prop_assume!(!doors.is_empty(), "a list without doors is an error");
        let text: String = doors.iter().map(|(_, line)| line.as_str()).collect();
        let doors: Vec<AdvancedDoor> = doors.into_iter().map(|(door, _)| door).collect();
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
