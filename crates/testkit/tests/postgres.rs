//! The test PostgreSQL harness itself: a real cluster on 127.0.0.1 only, stopped and started
//! again on the same port with its data, and gone (server and directory) when dropped.

use std::path::Path;
use weightvault_testkit::postgres::TestPostgres;

#[test]
fn a_cluster_listens_on_loopback_survives_a_restart_and_is_removed_when_dropped() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-scratch");
    let mut pg = TestPostgres::start_in(&base).unwrap();
    assert!(pg.url().starts_with("postgres://postgres@127.0.0.1:"));
    assert_eq!(
        pg.psql("postgres", "SHOW listen_addresses").unwrap(),
        "127.0.0.1"
    );
    pg.psql(
        "postgres",
        "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)",
    )
    .unwrap();
    let url = pg.create_database("second").unwrap();
    assert_eq!(url, pg.url_for("second"));
    assert_eq!(
        pg.psql("second", "SELECT current_database()").unwrap(),
        "second"
    );

    let port = pg.port();
    pg.stop().unwrap();
    assert!(pg.psql("postgres", "SELECT 1").is_err(), "stopped");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens once stopped"
    );
    pg.start().unwrap();
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("postgres", "SELECT v FROM kept").unwrap(), "42");

    let dirs = |base: &Path| -> Vec<_> {
        std::fs::read_dir(base)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("pg-{}-", std::process::id())))
            .collect()
    };
    assert_eq!(dirs(&base).len(), 1);
    drop(pg);
    assert!(dirs(&base).is_empty(), "the directory is removed");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server is stopped"
    );
}
