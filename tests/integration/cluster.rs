//! The Redis sink against a real three-primary Redis Cluster.

use crate::support::*;

/// Every hash under `<prefix>:` on every primary (each node answers for its own slots).
async fn cluster_hashes(prefix: &str) -> Rows {
    let seed = redis_cluster_url();
    let mut seed_conn = redis::Client::open(seed.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the Redis Cluster at {seed}: {e} (run scripts/services.sh)"));
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut seed_conn).await.unwrap();
    let mut out = Rows::new();
    for line in nodes.lines().filter(|l| l.contains("master")) {
        let addr = line.split_whitespace().nth(1).unwrap().split('@').next().unwrap();
        let mut c =
            redis::Client::open(format!("redis://{addr}")).unwrap().get_multiplexed_async_connection().await.unwrap();
        out.extend(redis_hashes(&mut c, prefix).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_sink_keeps_the_table() {
    let env = Env::new("cluster").await;
    env.pg
        .batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, name text, score int);
             INSERT INTO users SELECT i, 'u' || i, i FROM generate_series(1, 400) i;
             CREATE TABLE tags (name text PRIMARY KEY, n int);
             INSERT INTO tags VALUES ('plain', 1), ('a}b', 2), ('x{y', 3), ('{}', 4), ('}{', 5), ('{tag}z', 6);",
        )
        .await
        .unwrap();
    env.write_config(&env.postgres_source(
        r#""public.users", "public.tags""#,
        &format!("[[sink]]\nkind = \"redis\"\nurl = \"{}\"\ncluster = true\n", redis_cluster_url()),
    ));
    let mut d = env.start();
    d.wait_streaming().await;
    let sql = "SELECT id, name, score FROM users";
    let prefix = format!("{}:users", env.name);
    let check = || async {
        let expected = table_rows(&env.pg, sql).await;
        let actual = cluster_hashes(&prefix).await;
        (expected == actual).then_some(())
    };
    wait_for("the cluster to hold the snapshot", DEADLINE, check).await;
    // Key values with braces that form no hash tag still get a version key in their slot.
    let tags = || async {
        let expected = table_rows(&env.pg, "SELECT name, n FROM tags").await;
        let actual = cluster_hashes(&format!("{}:tags", env.name)).await;
        (expected == actual).then_some(())
    };
    wait_for("the tags with braces", DEADLINE, tags).await;
    env.pg.batch_execute("UPDATE tags SET n = n * 10; DELETE FROM tags WHERE name = 'x{y';").await.unwrap();
    wait_for("the tags with braces updated", DEADLINE, tags).await;

    env.pg
        .batch_execute(
            "UPDATE users SET score = score * 2 WHERE id % 3 = 0;
             DELETE FROM users WHERE id % 5 = 0;
             INSERT INTO users SELECT i, 'late', 0 FROM generate_series(401, 450) i;",
        )
        .await
        .unwrap();
    wait_for("the cluster to hold the stream", DEADLINE, check).await;

    // A truncate reaches keys on every primary.
    env.pg.batch_execute("TRUNCATE users; INSERT INTO users VALUES (1, 'again', 1);").await.unwrap();
    wait_for("the cluster to apply the truncate", DEADLINE, check).await;
    assert!(d.terminate().success(), "{}", d.log());

    // Clean the cluster keys of this test.
    let seed = redis_cluster_url();
    let client = redis::cluster::ClusterClient::new(vec![seed.as_str()]).unwrap();
    let mut c = client.get_async_connection().await.unwrap();
    let mut keys: Vec<String> = cluster_hashes(&prefix).await.keys().map(|k| format!("{prefix}:{k}")).collect();
    let tag_prefix = format!("{}:tags", env.name);
    keys.extend(cluster_hashes(&tag_prefix).await.keys().map(|k| format!("{tag_prefix}:{k}")));
    for k in keys {
        let _: () = redis::cmd("DEL").arg(&k).query_async(&mut c).await.unwrap();
    }
    env.cleanup().await;
}
