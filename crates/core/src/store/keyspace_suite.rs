//! The behaviour suite of the keyspace calls (`keyspace.rs`), on every backend of `suite.rs`:
//! the embedded store and the Redis on `REDIS_URL`. A Redis Cluster must refuse every call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::keyspace::*;
use super::suite::{backends, listen};
use super::*;
use crate::error::ErrorCode;
use crate::event::record_from_live;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The keys of index `name` under prefix `p`: the sorted set and its documents' prefix.
fn index_names(p: &str, name: &str) -> (String, String) {
    let index = format!("{p}:{name}");
    let docs = format!("{index}:meta:");
    (index, docs)
}

fn as_map(fields: &[(String, String)]) -> HashMap<String, String> {
    fields.iter().cloned().collect()
}

/// On a cluster every call is refused; true when the store was one (the test is done).
async fn refused_on_cluster(store: &Arc<dyn Store>) -> bool {
    if !store.keys().is_cluster() {
        return false;
    }
    let err = store.kv_get("any").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unsupported);
    let keys = IndexKeys::new("i", "i:meta:");
    let err = store.index_read(keys, 0, 10, &[]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unsupported);
    store.close();
    true
}

/// Poll `check` until it holds or 5 s pass.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Entries keep their fields in order; ranges honour cursors, time bounds, direction, count
/// and a field filter (full pages); an append is published on the live channel it names.
#[tokio::test]
async fn raw_entries_are_appended_published_and_ranged() {
    for (store, recorder) in backends("ks-entries").await {
        if refused_on_cluster(&store).await {
            continue;
        }
        let k = store.keys().clone();
        let stream = StreamRef::new("flow", "run:r1").unwrap();
        let key = k.stream(&stream);
        let channel = k.live_channel(&stream);
        let (_live, heard) = listen(&store, &channel).await;
        let mut ids = Vec::new();
        let mut written = Vec::new();
        for i in 0..5 {
            let fields = pairs(&[
                ("type", if i % 2 == 0 { "t0" } else { "t1" }),
                ("data", &format!("{{\"i\":{i}}}")),
                ("extra", "a\u{1}b"),
            ]);
            let target = LiveTarget {
                channel: &channel,
                stream: &stream,
            };
            ids.push(
                store
                    .entry_append(&key, &fields, None, Some(target))
                    .await
                    .unwrap(),
            );
            written.push(fields);
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let all = store
            .entry_range(&key, &EntryRange::default())
            .await
            .unwrap();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        assert_eq!(
            all.iter().map(|e| e.fields.clone()).collect::<Vec<_>>(),
            written
        );
        let between = EntryRange {
            after: Some(ids[1]),
            before: Some(ids[4]),
            ..Default::default()
        };
        let got = store.entry_range(&key, &between).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.id).collect::<Vec<_>>(),
            [ids[2], ids[3]]
        );
        let newest = EntryRange {
            reverse: true,
            count: Some(2),
            ..Default::default()
        };
        let got = store.entry_range(&key, &newest).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.id).collect::<Vec<_>>(),
            [ids[4], ids[3]]
        );
        let only = |value: &str, count, reverse| EntryRange {
            only: Some(FieldIn {
                field: "type".into(),
                any_of: vec![value.into()],
            }),
            count,
            reverse,
            ..Default::default()
        };
        let got = store.entry_range(&key, &only("t0", Some(2), false)).await;
        assert_eq!(
            got.unwrap().iter().map(|e| e.id).collect::<Vec<_>>(),
            [ids[0], ids[2]],
            "a filtered page is full"
        );
        let got = store.entry_range(&key, &only("t1", None, true)).await;
        assert_eq!(
            got.unwrap().iter().map(|e| e.id).collect::<Vec<_>>(),
            [ids[3], ids[1]]
        );
        let by_time = EntryRange {
            from_ms: Some(ids[0].ms),
            to_ms: Some(ids[4].ms),
            ..Default::default()
        };
        assert_eq!(store.entry_range(&key, &by_time).await.unwrap().len(), 5);
        let before_all = EntryRange {
            to_ms: Some(ids[0].ms - 1),
            ..Default::default()
        };
        assert!(store
            .entry_range(&key, &before_all)
            .await
            .unwrap()
            .is_empty());

        // a lean-events read of the stream sees the entries as foreign records
        let records = store.read(&stream, &ReadOptions::default()).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&records[1].json).unwrap();
        assert_eq!(v["kind"], "");
        assert_eq!(v["subject"], "run:r1");
        assert_eq!(v["fields"]["type"], "t1");
        assert_eq!(v["fields"]["extra"], "a\u{1}b");

        // every append was published, in order, as a record of the stream
        let published = || -> Vec<String> {
            match store.pubsub() {
                Some(_) => heard
                    .lock()
                    .unwrap()
                    .iter()
                    .filter_map(|p| record_from_live(p).map(|r| r.json))
                    .collect(),
                None => recorder
                    .0
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(c, _)| *c == channel)
                    .map(|(_, json)| json.clone())
                    .collect(),
            }
        };
        eventually("every append was published", || published().len() == 5).await;
        let want: Vec<String> = records.iter().map(|r| r.json.clone()).collect();
        assert_eq!(published(), want);

        // a cap trims the oldest entries
        let capped = format!("{}:capped", k.prefix());
        for i in 0..300 {
            let f = pairs(&[("n", &i.to_string())]);
            store
                .entry_append(&capped, &f, Some(10), None)
                .await
                .unwrap();
        }
        let left = store
            .entry_range(&capped, &EntryRange::default())
            .await
            .unwrap();
        assert!(left.len() < 300, "{} entries left", left.len());
        assert_eq!(left.last().unwrap().fields, pairs(&[("n", "299")]));

        // another type at the key is refused
        let text = format!("{}:text", k.prefix());
        store.kv_set(&text, "x", None).await.unwrap();
        let err = store
            .entry_range(&text, &EntryRange::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::WrongType);
        store.close();
    }
}

/// Strings: set, get, expiry, increments that keep the expiry and treat a non-number as 0,
/// deletion of keys of any type and clearing by pattern.
#[tokio::test]
async fn strings_expire_increment_and_clear() {
    for (store, _) in backends("ks-strings").await {
        if refused_on_cluster(&store).await {
            continue;
        }
        let p = store.keys().prefix().to_owned();
        let key = |s: &str| format!("{p}:{s}");
        assert_eq!(store.kv_get(&key("none")).await.unwrap(), None);
        store.kv_set(&key("a"), "\"42\"", None).await.unwrap();
        assert_eq!(
            store.kv_get(&key("a")).await.unwrap().as_deref(),
            Some("\"42\"")
        );
        store.kv_set(&key("short"), "1", Some(30)).await.unwrap();
        let s = store.clone();
        let k2 = key("short");
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.kv_get(&k2).await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "the key expired");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        assert_eq!(store.kv_increment(&key("n"), 2.0).await.unwrap(), "2");
        assert_eq!(store.kv_increment(&key("n"), 3.0).await.unwrap(), "5");
        let half = store.kv_increment(&key("n"), 0.5).await.unwrap();
        assert_eq!(half.parse::<f64>().unwrap(), 5.5);
        assert_eq!(store.kv_increment(&key("a"), 1.0).await.unwrap(), "1");
        let err = store.kv_increment(&key("n"), f64::NAN).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        store.kv_set(&key("ttl"), "7", Some(150)).await.unwrap();
        assert_eq!(store.kv_increment(&key("ttl"), 1.0).await.unwrap(), "8");
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.kv_get(&key("ttl")).await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "the increment kept the expiry");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // keys of every type are deleted and cleared alike
        let f = pairs(&[("x", "1")]);
        store
            .entry_append(&key("s:1"), &f, None, None)
            .await
            .unwrap();
        let (idx, doc_prefix) = index_names(&p, "s:idx");
        let ik = IndexKeys::new(&idx, &doc_prefix);
        store.index_put(ik, "m", 1.0, Some(&f)).await.unwrap();
        store.kv_set(&key("s:2"), "v", None).await.unwrap();
        let err = store.kv_get(&key("s:1")).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::WrongType);
        let gone = store
            .keys_delete(&[key("a"), key("missing")])
            .await
            .unwrap();
        assert_eq!(gone, 1);
        assert_eq!(store.keys_clear(&format!("{p}:s:*")).await.unwrap(), 4);
        assert_eq!(store.index_get(ik, "m").await.unwrap(), None);
        assert_eq!(store.keys_clear(&format!("{p}:*")).await.unwrap(), 1);
        store.close();
    }
}

/// Index entries: put replaces the document, get and read return scores and documents (read
/// highest first, one round trip per page), filters pass top-level values or absence, also
/// over an index longer than one scan chunk; remove takes the document along.
#[tokio::test]
async fn indexes_put_get_read_and_filter() {
    for (store, _) in backends("ks-index").await {
        if refused_on_cluster(&store).await {
            continue;
        }
        let p = store.keys().prefix().to_owned();
        let (idx, doc_prefix) = index_names(&p, "runs");
        let ik = IndexKeys::new(&idx, &doc_prefix);
        let statuses = ["running", "done", "awaiting", "running"];
        for (i, s) in statuses.iter().enumerate() {
            let doc = pairs(&[("status", s), ("version", "0"), ("n.i", &i.to_string())]);
            store
                .index_put(ik, &format!("r{i}"), 100.0 + i as f64, Some(&doc))
                .await
                .unwrap();
        }
        store.index_put(ik, "bare", 50.0, None).await.unwrap();
        store.index_put(ik, "tie", 100.0, Some(&[])).await.unwrap();
        let r1 = store.index_get(ik, "r1").await.unwrap().unwrap();
        assert_eq!(r1.score, 101.0);
        assert_eq!(
            as_map(&r1.fields),
            as_map(&pairs(&[
                ("status", "done"),
                ("version", "0"),
                ("n.i", "1")
            ]))
        );
        let bare = store.index_get(ik, "bare").await.unwrap().unwrap();
        assert!(bare.fields.is_empty());
        assert_eq!(store.index_get(ik, "nope").await.unwrap(), None);

        let page = store.index_read(ik, 0, 50, &[]).await.unwrap();
        let order: Vec<&str> = page.iter().map(|d| d.member.as_str()).collect();
        assert_eq!(order, ["r3", "r2", "r1", "tie", "r0", "bare"]);
        let page = store.index_read(ik, 1, 2, &[]).await.unwrap();
        let order: Vec<&str> = page.iter().map(|d| d.member.as_str()).collect();
        assert_eq!(order, ["r2", "r1"]);
        assert_eq!(as_map(&page[0].fields)["status"], "awaiting");

        let status = |any_of: &[&str], or_absent| DocFilter {
            field: "status".into(),
            any_of: any_of.iter().map(|s| (*s).to_owned()).collect(),
            or_absent,
        };
        let got = store
            .index_read(ik, 0, 50, &[status(&["running", "awaiting"], false)])
            .await
            .unwrap();
        let order: Vec<&str> = got.iter().map(|d| d.member.as_str()).collect();
        assert_eq!(order, ["r3", "r2", "r0"]);
        let got = store
            .index_read(ik, 1, 1, &[status(&["running"], false)])
            .await
            .unwrap();
        assert_eq!(got[0].member, "r0", "the offset counts matches");
        let got = store
            .index_read(ik, 0, 50, &[status(&["done"], true)])
            .await
            .unwrap();
        let order: Vec<&str> = got.iter().map(|d| d.member.as_str()).collect();
        assert_eq!(order, ["r1", "tie", "bare"]);
        let nested = DocFilter {
            field: "n".into(),
            any_of: vec!["1".into()],
            or_absent: true,
        };
        let got = store.index_read(ik, 0, 50, &[nested]).await.unwrap();
        let order: Vec<&str> = got.iter().map(|d| d.member.as_str()).collect();
        assert_eq!(
            order,
            ["tie", "bare"],
            "an object is neither a value nor absent"
        );

        // put replaces the whole document
        let doc = pairs(&[("only", "this")]);
        store.index_put(ik, "r1", 101.0, Some(&doc)).await.unwrap();
        let r1 = store.index_get(ik, "r1").await.unwrap().unwrap();
        assert_eq!(r1.fields, doc);

        assert!(store.index_remove(ik, "r1").await.unwrap());
        assert!(!store.index_remove(ik, "r1").await.unwrap());
        assert_eq!(store.index_get(ik, "r1").await.unwrap(), None);
        assert_eq!(
            store.keys_delete(&[ik.doc("r1")]).await.unwrap(),
            0,
            "the document went with the entry"
        );

        // a filtered read finds matches beyond one scan chunk
        let (big, big_prefix) = index_names(&p, "big");
        let bk = IndexKeys::new(&big, &big_prefix);
        let n = INDEX_SCAN_CHUNK + 500;
        for i in 0..n {
            let s = if i % 300 == 0 { "rare" } else { "common" };
            let doc = pairs(&[("status", s)]);
            store
                .index_put(bk, &format!("m{i:05}"), i as f64, Some(&doc))
                .await
                .unwrap();
        }
        let rare = store
            .index_read(bk, 1, 10, &[status(&["rare"], false)])
            .await
            .unwrap();
        let want: Vec<String> = (0..n)
            .rev()
            .filter(|i| i % 300 == 0)
            .skip(1)
            .map(|i| format!("m{i:05}"))
            .collect();
        assert_eq!(
            rare.iter().map(|d| d.member.clone()).collect::<Vec<_>>(),
            want
        );
        let all = store.index_read(bk, 1, n, &[]).await.unwrap();
        assert_eq!(all.len(), n - 1, "an unfiltered read longer than one chunk");
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, d)| d.score == (n - 2 - i) as f64));
        assert_eq!(as_map(&all[0].fields)["status"], "common");
        store.keys_clear(&format!("{p}:*")).await.unwrap();
        store.close();
    }
}

/// Merges set leaves, replace what is in a path's way, delete subtrees, keep empty objects and
/// bump the version, in one step each (concurrent merges all land); increments add at a dot
/// path, start from 0 where there is no number, and bump the version too.
#[tokio::test]
async fn merges_and_increments_follow_the_dot_path_rules() {
    for (store, _) in backends("ks-merge").await {
        if refused_on_cluster(&store).await {
            continue;
        }
        let p = store.keys().prefix().to_owned();
        let (idx, doc_prefix) = index_names(&p, "runs");
        let ik = IndexKeys::new(&idx, &doc_prefix);
        let doc = pairs(&[("a.b", "1"), ("a.c", "x"), ("s", "str"), ("version", "0")]);
        store.index_put(ik, "r", 1.0, Some(&doc)).await.unwrap();
        let fields = || async { as_map(&store.index_get(ik, "r").await.unwrap().unwrap().fields) };
        let merge = |ops: Vec<PathOp>| {
            let store = store.clone();
            async move {
                store
                    .index_merge(ik, "r", &ops, Some("version"))
                    .await
                    .unwrap()
            }
        };
        let set = |p: &str, v: &str| PathOp::Set(p.into(), v.into());

        assert_eq!(merge(vec![set("a.d", "2")]).await, Some(1));
        let f = fields().await;
        assert_eq!((f["a.b"].as_str(), f["a.d"].as_str()), ("1", "2"));
        assert_eq!(f["version"], "1");

        merge(vec![set("a", "7")]).await;
        let f = fields().await;
        assert_eq!(f["a"], "7");
        assert!(!f.keys().any(|k| k.starts_with("a.")), "{f:?}");

        merge(vec![set("a.x.y", "1")]).await;
        let f = fields().await;
        assert_eq!(f["a.x.y"], "1");
        assert!(!f.contains_key("a"), "a leaf in the path's way goes");

        merge(vec![PathOp::Delete("a".into())]).await;
        let f = fields().await;
        assert!(!f.keys().any(|k| k == "a" || k.starts_with("a.")), "{f:?}");

        merge(vec![PathOp::Object("e".into())]).await;
        assert_eq!(fields().await["e."], "");
        merge(vec![set("e.k", "1")]).await;
        let f = fields().await;
        assert!(!f.contains_key("e.") && f["e.k"] == "1", "{f:?}");
        merge(vec![PathOp::Object("e".into())]).await;
        assert!(!fields().await.contains_key("e."), "e is no longer empty");
        merge(vec![
            PathOp::Delete("e.k".into()),
            PathOp::Object("e".into()),
        ])
        .await;
        assert_eq!(fields().await["e."], "", "emptied, it stays an object");
        assert_eq!(fields().await["version"], "8");
        merge(vec![set("g.h.i", "1")]).await;
        merge(vec![PathOp::Delete("g.h.i".into())]).await;
        let f = fields().await;
        assert_eq!(
            f["g.h."], "",
            "the object a deleted path was in stays: {f:?}"
        );
        assert!(!f.contains_key("g."), "{f:?}");

        assert_eq!(
            store
                .index_merge(ik, "nope", &[set("a", "1")], Some("version"))
                .await
                .unwrap(),
            None
        );
        store.index_put(ik, "bare", 2.0, None).await.unwrap();
        assert_eq!(
            store
                .index_merge(ik, "bare", &[set("a", "1")], Some("version"))
                .await
                .unwrap(),
            None,
            "an entry without a document is not merged into"
        );

        // increments
        let inc = |member: &'static str, path: &'static str, by: f64| {
            let store = store.clone();
            async move {
                store
                    .index_increment(ik, member, path, by, Some("version"))
                    .await
                    .unwrap()
            }
        };
        assert_eq!(inc("r", "stats.total", 1.0).await.as_deref(), Some("1"));
        assert_eq!(inc("r", "stats.total", 2.0).await.as_deref(), Some("3"));
        assert_eq!(
            inc("r", "s", 1.0).await.as_deref(),
            Some("1"),
            "not a number"
        );
        assert_eq!(inc("r", "s.deep", 1.0).await.as_deref(), Some("1"));
        let f = fields().await;
        assert!(!f.contains_key("s") && f["s.deep"] == "1", "{f:?}");
        assert_eq!(f["version"], "14");
        let frac = inc("r", "stats.total", -0.25).await.unwrap();
        assert_eq!(frac.parse::<f64>().unwrap(), 2.75);
        assert_eq!(inc("nope", "x", 1.0).await, None);
        assert_eq!(inc("bare", "x", 1.0).await.as_deref(), Some("1"));

        // 20 concurrent merges into one document, each a nested partial: all land
        let before: i64 = fields().await["version"].parse().unwrap();
        let merges = (0..20).map(|i| {
            let store = store.clone();
            async move {
                let ops = vec![PathOp::Set(format!("emitted.s{i}.done"), i.to_string())];
                store.index_merge(ik, "r", &ops, Some("version")).await
            }
        });
        let outcomes = futures_util::future::join_all(merges).await;
        assert!(outcomes.iter().all(|o| matches!(o, Ok(Some(_)))));
        let f = fields().await;
        for i in 0..20 {
            assert_eq!(f[&format!("emitted.s{i}.done")], i.to_string());
        }
        assert_eq!(f["version"], (before + 20).to_string());
        store.keys_clear(&format!("{p}:*")).await.unwrap();
        store.close();
    }
}
