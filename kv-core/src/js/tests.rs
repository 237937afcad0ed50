use super::*;

#[test]
fn header_block() {
    let h = parse_header_block(b"NATS/1.0\r\nKV-Operation: DEL\r\nNats-TTL: 5s\r\n\r\n").unwrap();
    assert_eq!(h.get("KV-Operation").unwrap().as_str(), "DEL");
    assert!(parse_header_block(b"garbage").is_none());
}

#[test]
fn a_direct_get_nobody_answered_is_unavailable() {
    let answer = |status| Message {
        subject: "_INBOX.x".into(),
        reply: None,
        payload: Bytes::new(),
        headers: None,
        status: Some(status),
        description: None,
        length: 0,
    };
    let err = direct_answer(answer(StatusCode::NO_RESPONDERS)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_transient());
    assert!(direct_answer(answer(StatusCode::NOT_FOUND))
        .unwrap()
        .is_none());
    let other = direct_answer(answer(StatusCode::from_u16(408).unwrap())).unwrap_err();
    assert_eq!(other.kind(), ErrorKind::Server);
}

proptest::proptest! {
    #[test]
    fn server_replies_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        let _ = parse_header_block(&bytes);
        let full = parse_api::<PubAck>(&bytes);
        if let Err(e) = &full {
            proptest::prop_assert!(!e.to_string().is_empty());
        }
        let once = parse_ack(&bytes);
        proptest::prop_assert_eq!(format!("{once:?}"), format!("{full:?}"));
    }

    #[test]
    fn header_blocks_round_trip(pairs in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,20}"), 0..6)) {
        let mut block = String::from("NATS/1.0\r\n");
        for (k, v) in &pairs {
            block.push_str(&format!("{k}: {v}\r\n"));
        }
        block.push_str("\r\n");
        let h = parse_header_block(block.as_bytes()).unwrap();
        for (k, v) in &pairs {
            let got: Vec<&str> = h.get_all(k.as_str()).map(|x| x.as_str()).collect();
            proptest::prop_assert!(got.contains(&v.trim()), "{k}: {got:?}");
        }
    }

    #[test]
    fn api_errors_keep_their_code(code in 10000u64..20000, desc in "[ -~]{0,40}") {
        let body = serde_json::json!({"error": {"code": 400, "err_code": code, "description": desc}});
        let e = parse_api::<PubAck>(body.to_string().as_bytes()).unwrap_err();
        proptest::prop_assert_eq!(e.server_code(), Some(code));
    }
}

#[test]
fn api_error_parsing() {
    let e = parse_api::<PubAck>(
        br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"}}"#,
    )
    .unwrap_err();
    assert!(e.is_conflict());
    let ack: PubAck = parse_api(br#"{"stream":"KV_x","seq":9}"#).unwrap();
    assert_eq!(ack.seq, 9);
    assert!(parse_api::<PubAck>(b"nonsense").is_err());
}

#[test]
fn acks_read_once_as_parse_api_reads_them() {
    let answers: [&[u8]; 7] = [
        br#"{"stream":"KV_x","seq":9}"#,
        br#"{"stream":"KV_x","seq":9,"count":3}"#,
        br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"}}"#,
        br#"{"error":null,"seq":4}"#,
        br#"{"error":"odd","seq":4}"#,
        br#"{"stream":"KV_x"}"#,
        b"nonsense",
    ];
    for a in answers {
        let (once, full) = (parse_ack(a), parse_api::<PubAck>(a));
        assert_eq!(
            format!("{once:?}"),
            format!("{full:?}"),
            "{}",
            String::from_utf8_lossy(a)
        );
    }
}

/// A consumer delete that hangs does not hold up the others: the janitor keeps several in
/// flight. (One at a time, each hanging delete held every later one for a request timeout,
/// and on a busy replicated bucket the dropped watches' consumers piled up past the server's
/// limit of consumers per stream.) The "API" here is a plain subscriber that never answers
/// deletes of consumer `hangs` and counts the others.
#[tokio::test]
async fn a_hanging_consumer_delete_does_not_hold_up_the_others() {
    let server = kvtk_tests::NatsServer::start().await;
    let client = server.connect().await;
    let mut api = client
        .subscribe("test.api.CONSUMER.DELETE.s.*")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let mut js = crate::Kv::new(client).js().clone();
    js.api = "test.api".into();
    js.timeout = Duration::from_secs(60);
    js.ensure_janitor();
    for name in ["hangs", "hangs", "hangs", "a", "b", "c"] {
        js.delete_consumer_later("s", name);
    }
    let answered = async {
        let mut answered = Vec::new();
        while answered.len() < 3 {
            let m = api.next().await.unwrap();
            let name = m.subject.rsplit('.').next().unwrap_or_default().to_string();
            if name != "hangs" {
                js.client
                    .publish(m.reply.unwrap(), "{}".into())
                    .await
                    .unwrap();
                answered.push(name);
            }
        }
        answered
    };
    let answered = kvtk_tests::within("the deletes behind the hanging ones", answered).await;
    assert_eq!(answered, ["a", "b", "c"]);
}
