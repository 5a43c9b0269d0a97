//! Real external tools on a real mount: coreutils, tar, rsync, git, sqlite3,
//! attr and fsx, each test on its own drive, checking bytes and metadata afterwards.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

fn meta(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()))
}

/// Source tree outside the mount: `<tmp>/tree`.
fn source_tree(with_big: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    make_tree(&dir.path().join("tree"), with_big);
    dir
}

const FULL: Compare = Compare { mtimes: true, nlink: true };

#[test]
fn cp_recursive_copies_bytes_and_modes() {
    let src = source_tree(true);
    let out = tempfile::tempdir().unwrap();
    let mut d = Drive::new();
    d.mount();
    let (tree, copy) = (src.path().join("tree"), d.path("copy"));
    // Plain `cp -r` applies the umask to new files: pin it so modes stay comparable.
    let umask_cp =
        |from: &Path, to: &Path| run("sh", &["-c", "umask 022 && cp -r \"$0\" \"$1\"", s(from), s(to)], None);
    umask_cp(&tree, &copy);
    run("diff", &["-r", "--no-dereference", s(&tree), s(&copy)], None);
    compare_trees(&tree, &copy, Compare { mtimes: false, nlink: false });
    // Within the mount (copy_file_range or read/write), and back out again.
    umask_cp(&copy, &d.path("copy2"));
    compare_trees(&tree, &d.path("copy2"), Compare { mtimes: false, nlink: false });
    umask_cp(&copy, &out.path().join("back"));
    run("diff", &["-r", "--no-dereference", s(&tree), s(&out.path().join("back"))], None);
    d.unmount();
}

#[test]
fn cp_archive_keeps_modes_mtimes_links() {
    let src = source_tree(true);
    let out = tempfile::tempdir().unwrap();
    let mut d = Drive::new();
    d.mount();
    let tree = src.path().join("tree");
    run("cp", &["-a", s(&tree), s(&d.path("tree"))], None);
    run("diff", &["-r", "--no-dereference", s(&tree), s(&d.path("tree"))], None);
    compare_trees(&tree, &d.path("tree"), FULL);
    let (hard, orig) = (meta(&d.path("tree/a/hard")), meta(&d.path("tree/page_plus")));
    assert_eq!((hard.ino(), hard.nlink()), (orig.ino(), 2), "cp -a keeps the hard link as one inode with nlink 2");
    run("cp", &["-a", s(&d.path("tree")), s(&d.path("tree2"))], None);
    compare_trees(&tree, &d.path("tree2"), FULL);
    run("cp", &["-a", s(&d.path("tree")), s(&out.path().join("back"))], None);
    compare_trees(&tree, &out.path().join("back"), FULL);
    d.unmount();
}

#[test]
fn mv_file_and_dir_across_dirs() {
    let mut d = Drive::new();
    d.mount();
    let (from, to) = (d.path("from"), d.path("to"));
    fs::create_dir(&from).unwrap();
    fs::create_dir(&to).unwrap();
    let data = test_data(7, MIB + 1);
    fs::write(from.join("file"), &data).unwrap();
    let ino = meta(&from.join("file")).ino();
    run("mv", &[s(&from.join("file")), s(&to.join("file"))], None);
    assert!(!from.join("file").exists(), "mv left the source behind");
    assert_file(&to.join("file"), &data);
    assert_eq!(meta(&to.join("file")).ino(), ino, "mv within one file system is a rename: same inode");

    fs::create_dir_all(from.join("sub/deeper")).unwrap();
    fs::write(from.join("sub/x"), b"x").unwrap();
    fs::write(from.join("sub/deeper/y"), test_data(8, 5000)).unwrap();
    assert_eq!((meta(&from).nlink(), meta(&to).nlink()), (3, 2), "nlink before moving the dir");
    run("mv", &[s(&from.join("sub")), s(&to)], None);
    assert!(!from.join("sub").exists());
    assert_file(&to.join("sub/x"), b"x");
    assert_file(&to.join("sub/deeper/y"), &test_data(8, 5000));
    assert_eq!((meta(&from).nlink(), meta(&to).nlink()), (2, 3), "nlink of the old and new parent after moving a dir");

    fs::write(to.join("old"), b"old contents").unwrap();
    run("mv", &[s(&to.join("file")), s(&to.join("old"))], None);
    assert_file(&to.join("old"), &data);
    assert!(!to.join("file").exists());
    run("mv", &[s(&to.join("sub")), s(&to.join("renamed"))], None);
    assert_file(&to.join("renamed/deeper/y"), &test_data(8, 5000));
    assert_eq!(
        walk(&d.mnt),
        ["from", "to", "to/old", "to/renamed", "to/renamed/deeper", "to/renamed/deeper/y", "to/renamed/x"]
    );
    d.unmount();
}

#[test]
fn rm_recursive_removes_everything() {
    let mut d = Drive::new();
    d.mount();
    make_tree(&d.path("tree"), false);
    fs::create_dir(d.path("tree/many")).unwrap();
    for idx in 0..500 {
        fs::write(d.path(&format!("tree/many/f{idx:04}")), idx.to_string()).unwrap();
    }
    run("rm", &["-r", s(&d.path("tree"))], None);
    assert!(!d.path("tree").exists(), "rm -r left the tree");
    assert_eq!(walk(&d.mnt), Vec::<String>::new(), "the mount is empty after rm -r");
    assert_eq!(meta(&d.mnt).nlink(), 2, "root dir nlink after removing its only subdir");
    d.unmount();
}

#[test]
fn mkdir_parents() {
    let mut d = Drive::new();
    d.mount();
    let deep = d.path("a/b/c/d/e");
    run("mkdir", &["-p", s(&deep)], None);
    for rel in ["a", "a/b", "a/b/c", "a/b/c/d", "a/b/c/d/e"] {
        assert!(meta(&d.path(rel)).is_dir(), "{rel} is not a dir after mkdir -p");
    }
    run("mkdir", &["-p", s(&deep)], None); // existing: still succeeds
    run("mkdir", &["-p", "-m", "0700", s(&d.path("a/x/y"))], None);
    assert_eq!(meta(&d.path("a/x/y")).mode() & 0o7777, 0o700, "mkdir -m sets the mode of the last dir");
    fs::write(d.path("a/file"), b"f").unwrap();
    let refused = output_of(Command::new("mkdir").args(["-p", s(&d.path("a/file/sub"))]));
    assert!(!refused.status.success(), "mkdir -p under a regular file must fail");
    assert_eq!(meta(&d.path("a")).nlink(), 4, "a has subdirs b and x: nlink 2 + 2");
    d.unmount();
}

#[test]
fn ln_hard_link_counts() {
    let mut d = Drive::new();
    d.mount();
    let (f, g) = (d.path("f"), d.path("g"));
    fs::write(&f, test_data(3, 5000)).unwrap();
    run("ln", &[s(&f), s(&g)], None);
    let stat_nlink = |p: &Path| stdout_of(&run("stat", &["-c", "%h %i", s(p)], None)).trim().to_owned();
    let (sf, sg) = (stat_nlink(&f), stat_nlink(&g));
    assert!(sf.starts_with("2 "), "stat of f right after ln: `{sf}` (want nlink 2)");
    assert_eq!(sf, sg, "both names show nlink 2 and the same inode");
    fs::OpenOptions::new().append(true).open(&g).unwrap().write_all(b"tail").unwrap();
    let mut want = test_data(3, 5000);
    want.extend_from_slice(b"tail");
    assert_file(&f, &want);
    fs::create_dir(d.path("dir")).unwrap();
    run("ln", &[s(&f), s(&d.path("dir/h"))], None);
    assert_eq!(meta(&f).nlink(), 3);
    run("rm", &[s(&g), s(&d.path("dir/h"))], None);
    assert!(stat_nlink(&f).starts_with("1 "), "nlink back to 1 after unlinking the other names");
    assert_file(&f, &want);
    d.unmount();
}

#[test]
fn ln_symbolic_and_readlink() {
    let mut d = Drive::new();
    d.mount();
    fs::write(d.path("target"), b"hello").unwrap();
    fs::create_dir(d.path("dir")).unwrap();
    fs::write(d.path("dir/inside"), b"in").unwrap();
    let long_target = "x/".repeat(500) + "end";
    for (target, link) in
        [("target", "link"), ("/nonexistent/abs", "dangling"), ("dir", "dirlink"), (long_target.as_str(), "long")]
    {
        run("ln", &["-s", target, s(&d.path(link))], None);
        assert_eq!(stdout_of(&run("readlink", &[s(&d.path(link))], None)).trim_end_matches('\n'), target);
        assert!(meta(&d.path(link)).file_type().is_symlink(), "{link} is not a symlink");
    }
    assert_file(&d.path("link"), b"hello");
    assert_file(&d.path("dirlink/inside"), b"in");
    assert_eq!(fs::metadata(d.path("dangling")).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert_eq!(meta(&d.path("link")).len(), "target".len() as u64, "a symlink's size is its target's length");
    d.unmount();
}

#[test]
fn chmod_shows_at_once_and_moves_ctime() {
    let mut d = Drive::new();
    d.mount();
    let f = d.path("f");
    fs::write(&f, b"data").unwrap();
    let before = meta(&f);
    wait_clock_past(before.ctime());
    run("chmod", &["0640", s(&f)], None);
    let after = meta(&f);
    assert_eq!(after.mode() & 0o7777, 0o640, "mode right after chmod");
    assert!((after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()), "chmod must change ctime");
    assert_eq!(
        (after.mtime(), after.mtime_nsec()),
        (before.mtime(), before.mtime_nsec()),
        "chmod must not change mtime"
    );
    run("chmod", &["u+x,g-r", s(&f)], None);
    assert_eq!(meta(&f).mode() & 0o7777, 0o700);
    fs::create_dir(d.path("dir")).unwrap();
    run("chmod", &["0711", s(&d.path("dir"))], None);
    assert_eq!(meta(&d.path("dir")).mode() & 0o7777, 0o711);
    assert_file(&f, b"data");
    d.unmount();
}

#[test]
fn chown_as_root() {
    let mut d = Drive::new();
    d.mount();
    fs::write(d.path("f"), b"data").unwrap();
    fs::create_dir(d.path("dir")).unwrap();
    std::os::unix::fs::symlink("f", d.path("link")).unwrap();
    run("chown", &["1234:1234", s(&d.path("f")), s(&d.path("dir"))], None);
    run("chown", &["-h", "4321:4321", s(&d.path("link"))], None);
    for (rel, id) in [("f", 1234), ("dir", 1234), ("link", 4321)] {
        let m = meta(&d.path(rel));
        assert_eq!((m.uid(), m.gid()), (id, id), "owner of {rel} after chown");
    }
    assert_eq!(stdout_of(&run("stat", &["-c", "%u:%g", s(&d.path("f"))], None)).trim(), "1234:1234");
    d.unmount();
}

#[test]
fn touch_sets_exact_times_and_honours_omit() {
    let mut d = Drive::new();
    d.mount();
    let f = d.path("f");
    let touch = |args: &[&str]| run_command(Command::new("touch").env("TZ", "UTC").args(args).arg(&f));
    let times = |p: &Path| {
        let m = meta(p);
        ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
    };
    touch(&["-d", "2001-02-03 04:05:06"]);
    assert_eq!(times(&f), ((981_173_106, 0), (981_173_106, 0)), "touch -d creates with exact atime and mtime");
    touch(&["-m", "-d", "2010-01-01 00:00:00.123456789"]);
    assert_eq!(times(&f), ((981_173_106, 0), (1_262_304_000, 123_456_789)), "touch -m must leave atime alone");
    touch(&["-a", "-d", "2012-01-01 00:00:00"]);
    assert_eq!(times(&f), ((1_325_376_000, 0), (1_262_304_000, 123_456_789)), "touch -a must leave mtime alone");
    assert_eq!(stdout_of(&run("stat", &["-c", "%Y", s(&f)], None)).trim(), "1262304000");
    d.unmount();
}

#[test]
fn truncate_grows_with_zeros_and_shrinks() {
    let mut d = Drive::new();
    d.mount();
    let f = d.path("f");
    let data = test_data(11, 10_000);
    fs::write(&f, &data).unwrap();
    run("truncate", &["-s", "1000000", s(&f)], None);
    let mut want = data.clone();
    want.resize(1_000_000, 0);
    assert_file(&f, &want);
    run("truncate", &["-s", "5000", s(&f)], None);
    assert_file(&f, &data[..5000]);
    // Shrink into the middle of a multi-chunk file, then grow: the old tail must not come back.
    let big = test_data(12, 5 * MIB);
    fs::write(&f, &big).unwrap();
    run("truncate", &["-s", &(3 * MIB + 1).to_string(), s(&f)], None);
    run("truncate", &["-s", &(6 * MIB).to_string(), s(&f)], None);
    let mut want = big[..3 * MIB + 1].to_vec();
    want.resize(6 * MIB, 0);
    assert_file(&f, &want);
    run("truncate", &["-s", "0", s(&f)], None);
    assert_file(&f, b"");
    d.unmount();
}

#[test]
fn tar_from_and_into_the_mount() {
    let src = source_tree(true);
    let out = tempfile::tempdir().unwrap();
    let mut d = Drive::new();
    d.mount();
    let tree = src.path().join("tree");
    run("cp", &["-a", s(&tree), s(&d.path("tree"))], None);
    // pax keeps nanosecond mtimes, so the comparison can be exact.
    let tarball = out.path().join("t.tar");
    run("tar", &["--format=posix", "-C", s(&d.mnt), "-cf", s(&tarball), "tree"], None);
    fs::create_dir(out.path().join("x")).unwrap();
    run("tar", &["-C", s(&out.path().join("x")), "-xf", s(&tarball)], None);
    compare_trees(&tree, &out.path().join("x/tree"), FULL);
    fs::create_dir(d.path("extracted")).unwrap();
    run("tar", &["-C", s(&d.path("extracted")), "-xf", s(&tarball)], None);
    compare_trees(&tree, &d.path("extracted/tree"), FULL);
    run("diff", &["-r", "--no-dereference", s(&tree), s(&d.path("extracted/tree"))], None);
    d.unmount();
}

#[test]
fn rsync_with_xattrs_then_nothing_to_do() {
    let src = source_tree(false);
    let mut d = Drive::new();
    d.mount();
    let tree = src.path().join("tree");
    run("setfattr", &["-n", "user.x", "-v", "y", s(&tree.join("one"))], None);
    run("setfattr", &["-n", "user.dir", "-v", "0x00ff00", s(&tree.join("a"))], None);
    let (from, to) = (format!("{}/", s(&tree)), format!("{}/", s(&d.path("tree"))));
    run("rsync", &["-aX", &from, &to], None);
    compare_trees(&tree, &d.path("tree"), Compare { mtimes: true, nlink: false });
    let value = run("getfattr", &["-n", "user.x", "--only-values", s(&d.path("tree/one"))], None);
    assert_eq!(value.stdout, b"y");
    let value = run("getfattr", &["-e", "hex", "-n", "user.dir", s(&d.path("tree/a"))], None);
    assert!(stdout_of(&value).contains("user.dir=0x00ff00"), "xattr on a dir: {}", stdout_of(&value));
    let again = run("rsync", &["-aXc", "--dry-run", "--itemize-changes", &from, &to], None);
    assert_eq!(stdout_of(&again).trim(), "", "a second rsync -aXc must find nothing to do");
    d.unmount();
}

#[test]
fn git_repository_inside_the_mount() {
    let mut d = Drive::new();
    d.mount();
    let repo = d.path("repo");
    let git = |args: &[&str]| {
        let mut command = Command::new("git");
        command.args([
            "-c",
            "user.name=Pact Test",
            "-c",
            "user.email=test@pactfs.invalid",
            "-c",
            "init.defaultBranch=main",
        ]);
        command.args(args).current_dir(&repo).env("GIT_CONFIG_NOSYSTEM", "1").env("HOME", &d.home);
        stdout_of(&run_command(&mut command))
    };
    fs::create_dir(&repo).unwrap();
    git(&["init", "-q"]);
    fs::create_dir(repo.join("src")).unwrap();
    let (a1, big) = (test_data(20, 3000), test_data(21, MIB + 7));
    fs::write(repo.join("a.txt"), &a1).unwrap();
    fs::write(repo.join("src/big.bin"), &big).unwrap();
    fs::write(repo.join("gone.txt"), b"to be deleted").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
    git(&["checkout", "-q", "-b", "feature"]);
    let a2 = test_data(22, 4000);
    fs::write(repo.join("a.txt"), &a2).unwrap();
    fs::remove_file(repo.join("gone.txt")).unwrap();
    fs::write(repo.join("new.txt"), b"new").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "second"]);
    git(&["checkout", "-q", "main"]);
    assert_file(&repo.join("a.txt"), &a1);
    assert_file(&repo.join("gone.txt"), b"to be deleted");
    assert!(!repo.join("new.txt").exists(), "checkout main must remove new.txt");
    git(&["checkout", "-q", "feature"]);
    assert_file(&repo.join("a.txt"), &a2);
    assert_file(&repo.join("src/big.bin"), &big);
    assert!(!repo.join("gone.txt").exists());
    git(&["fsck", "--full", "--strict"]);
    git(&["gc", "-q"]);
    git(&["fsck", "--full", "--strict"]);
    assert_eq!(git(&["status", "--porcelain"]), "", "work tree clean after checkout");
    assert_eq!(git(&["log", "--format=%s", "main..feature"]).trim(), "second");
    d.unmount();
}

#[test]
fn sqlite_transactions_and_integrity_after_remount() {
    let mut d = Drive::new();
    d.mount();
    let db = d.path("test.db");
    let sql = |statements: &str| stdout_of(&run("sqlite3", &[s(&db), statements], None));
    sql("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, payload BLOB NOT NULL);");
    for batch in 0..10 {
        let mut statements = String::from("BEGIN;");
        for row in 0..100 {
            let n = batch * 100 + row;
            statements.push_str(&format!(
                "INSERT INTO t(name, payload) VALUES ('row-{n}', randomblob({}));",
                1000 + n % 7 * 300
            ));
        }
        statements.push_str("COMMIT;");
        sql(&statements);
    }
    let check = |sql: &dyn Fn(&str) -> String| {
        assert_eq!(sql("PRAGMA integrity_check;").trim(), "ok");
        assert_eq!(sql("SELECT count(*), count(DISTINCT name) FROM t;").trim(), "1000|1000");
        assert_eq!(sql("SELECT name FROM t WHERE id = 777;").trim(), "row-776");
    };
    check(&sql);
    d.unmount();
    d.mount();
    check(&sql);
    sql("DELETE FROM t WHERE id % 2 = 0; VACUUM;");
    assert_eq!(sql("PRAGMA integrity_check;").trim(), "ok");
    assert_eq!(sql("SELECT count(*) FROM t;").trim(), "500");
    d.unmount();
}

#[test]
fn editor_style_atomic_save() {
    let mut d = Drive::new();
    d.mount();
    let (doc, tmp) = (d.path("doc.txt"), d.path(".doc.txt.swp"));
    let (v1, v2) = (test_data(30, 9000), test_data(31, 12_000));
    write_synced(&doc, &v1);
    let old_ino = meta(&doc).ino();
    let mut old_handle = fs::File::open(&doc).unwrap();
    write_synced(&tmp, &v2);
    fs::rename(&tmp, &doc).unwrap();
    sync_dir(&d.mnt);
    assert_file(&doc, &v2);
    assert_ne!(meta(&doc).ino(), old_ino, "the saved file is a new inode");
    assert!(!tmp.exists(), "the temp name is gone after rename");
    let mut old = Vec::new();
    std::io::Read::read_to_end(&mut old_handle, &mut old).unwrap();
    assert_bytes_eq("an fd opened before the rename still reads the old file", &old, &v1);
    drop(old_handle);
    assert_eq!(walk(&d.mnt), ["doc.txt"]);
    d.unmount();
}

#[test]
fn df_shows_default_capacity() {
    let mut d = Drive::new();
    d.mount();
    let vfs = statvfs(&d.mnt);
    assert_eq!(
        vfs.f_blocks * vfs.f_frsize,
        1 << 40,
        "default capacity is 1 TiB (f_blocks {} x f_frsize {})",
        vfs.f_blocks,
        vfs.f_frsize
    );
    let df = stdout_of(&run("df", &["-h", "--output=size", s(&d.mnt)], None));
    assert_eq!(df.lines().nth(1).map(str::trim), Some("1.0T"), "df -h size column:\n{df}");
    d.unmount();
}

#[test]
fn df_shows_configured_capacity() {
    let mut d = Drive::new();
    d.set_config("storage", "capacity", "\"10GiB\"");
    d.pactfs_ok(&["config", "check"]);
    d.mount();
    let vfs = statvfs(&d.mnt);
    assert_eq!(vfs.f_blocks * vfs.f_frsize, 10 * GIB, "f_blocks {} x f_frsize {}", vfs.f_blocks, vfs.f_frsize);
    let df = stdout_of(&run("df", &["-B1", "--output=size", s(&d.mnt)], None));
    assert_eq!(df.lines().nth(1).map(str::trim), Some("10737418240"), "df -B1:\n{df}");
    d.unmount();
}

#[test]
fn du_matches_written_size() {
    let mut d = Drive::new();
    d.mount();
    let f = d.path("f");
    let size = 3 * MIB + 5;
    fs::write(&f, test_data(40, size)).unwrap();
    let du_b = stdout_of(&run("du", &["-sb", s(&f)], None));
    assert_eq!(du_b.split_whitespace().next(), Some(size.to_string().as_str()), "du -sb: {du_b}");
    // st_blocks too: cp, tar and rsync treat a file with too few blocks as sparse.
    let du_k: usize = stdout_of(&run("du", &["-sk", s(&f)], None)).split_whitespace().next().unwrap().parse().unwrap();
    assert!(du_k * KIB >= size && du_k * KIB <= 2 * size + MIB, "du -sk reports {du_k} KiB for a {size}-byte file");
    d.unmount();
}

#[test]
fn find_lists_what_was_created() {
    let mut d = Drive::new();
    d.mount();
    let entries = make_tree(&d.path("tree"), false);
    let listed = stdout_of(&run("find", &[s(&d.path("tree")), "-mindepth", "1", "-printf", "%P %y\n"], None));
    let mut listed: Vec<(String, char)> = listed
        .lines()
        .map(|line| {
            let (p, k) = line.rsplit_once(' ').unwrap();
            (p.to_owned(), k.chars().next().unwrap())
        })
        .collect();
    listed.sort();
    assert_eq!(listed, entries);
    // A directory large enough to need several readdir calls.
    fs::create_dir(d.path("many")).unwrap();
    for idx in 0..1000 {
        fs::File::create(d.path(&format!("many/f{idx:04}"))).unwrap();
    }
    let names = stdout_of(&run("find", &[s(&d.path("many")), "-type", "f", "-printf", "%f\n"], None));
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    let want: Vec<String> = (0..1000).map(|idx| format!("f{idx:04}")).collect();
    assert_eq!(names, want, "find lists each of 1000 files exactly once");
    let some = stdout_of(&run("find", &[s(&d.path("many")), "-name", "f09*"], None));
    assert_eq!(some.lines().count(), 100);
    let ls = stdout_of(&run("ls", &["-1", s(&d.path("many"))], None));
    assert_eq!(ls.lines().count(), 1000);
    d.unmount();
}

#[test]
fn xattrs_set_get_list_remove() {
    let mut d = Drive::new();
    d.mount();
    let f = d.path("f");
    fs::write(&f, b"data").unwrap();
    fs::create_dir(d.path("dir")).unwrap();
    run("setfattr", &["-n", "user.a", "-v", "hello", s(&f)], None);
    run("setfattr", &["-n", "user.bin", "-v", "0x00ff10", s(&f)], None);
    run("setfattr", &["-n", "user.d", "-v", "on-dir", s(&d.path("dir"))], None);
    assert_eq!(run("getfattr", &["-n", "user.a", "--only-values", s(&f)], None).stdout, b"hello");
    assert_eq!(run("getfattr", &["-n", "user.bin", "--only-values", s(&f)], None).stdout, [0x00, 0xff, 0x10]);
    assert_eq!(run("getfattr", &["-n", "user.d", "--only-values", s(&d.path("dir"))], None).stdout, b"on-dir");
    let listed = stdout_of(&run("attr", &["-l", s(&f)], None));
    assert!(
        listed.contains("\"a\" has a 5 byte value") && listed.contains("\"bin\" has a 3 byte value"),
        "attr -l:\n{listed}"
    );
    run("setfattr", &["-n", "user.a", "-v", "replaced", s(&f)], None);
    assert_eq!(run("getfattr", &["-n", "user.a", "--only-values", s(&f)], None).stdout, b"replaced");
    run("setfattr", &["-x", "user.a", s(&f)], None);
    let missing = output_of(Command::new("getfattr").args(["-n", "user.a", s(&f)]));
    assert!(
        !missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("No such attribute"),
        "a removed xattr must read as ENODATA:\n{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let dumped = stdout_of(&run("getfattr", &["-d", "-m", "-", s(&f)], None));
    assert!(dumped.contains("user.bin") && !dumped.contains("user.a="), "getfattr -d after remove:\n{dumped}");
    assert_file(&f, b"data");
    d.unmount();
}

#[test]
fn deleting_a_big_file_gives_space_back() {
    let mut d = Drive::new();
    d.mount();
    let avail = |d: &Drive| {
        let v = statvfs(&d.mnt);
        v.f_bavail * v.f_frsize
    };
    let before = avail(&d);
    let f = d.path("big");
    write_synced(&f, &test_data(50, 32 * MIB));
    let used = 16 * MIB as u64;
    wait_for("statvfs free space to drop after writing 32 MiB", WAIT_TIMEOUT, || avail(&d) + used <= before);
    let after_write = avail(&d);
    fs::remove_file(&f).unwrap();
    sync_dir(&d.mnt);
    wait_for("statvfs free space to grow back after deleting the 32 MiB file", WAIT_TIMEOUT, || {
        avail(&d) >= after_write + used
    });
    d.unmount();
}

#[test]
fn fallocate_preallocates_punches_and_zeroes() {
    let mut d = Drive::new();
    d.mount();
    let f = d.path("f");
    let data = test_data(21, 3 * MIB);
    fs::write(&f, &data).unwrap();
    let fallocate = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push(s(&f));
        run("fallocate", &all, None);
    };
    let mut want = data.clone();
    // Preallocating past the end grows the file with zeros.
    fallocate(&["-l", &(4 * MIB).to_string()]);
    want.resize(4 * MIB, 0);
    assert_file(&f, &want);
    // Keep-size preallocation changes nothing a reader sees.
    fallocate(&["--keep-size", "-o", "0", "-l", &(8 * MIB).to_string()]);
    assert_file(&f, &want);
    // A punched hole reads back as zeros and the size stays.
    fallocate(&["--punch-hole", "-o", "4096", "-l", "100000"]);
    want[4096..104_096].fill(0);
    assert_file(&f, &want);
    // Zeroing past the end grows the file; with -k it stops at the end.
    fallocate(&["--zero-range", "-o", &(3 * MIB + 7).to_string(), "-l", &(2 * MIB).to_string()]);
    want[3 * MIB + 7..].fill(0);
    want.resize(5 * MIB + 7, 0);
    assert_file(&f, &want);
    fallocate(&["--zero-range", "--keep-size", "-o", "10", "-l", &(20 * MIB).to_string()]);
    want[10..].fill(0);
    assert_file(&f, &want);
    // Modes pactfs cannot honour say so instead of doing something else.
    let collapse = output_of(Command::new("fallocate").args(["--collapse-range", "-o", "0", "-l", "4096", s(&f)]));
    assert!(!collapse.status.success(), "collapse-range must be refused");
    assert_file(&f, &want);
    d.unmount();
    d.mount();
    assert_file(&d.path("f"), &want);
    d.unmount();
}

#[test]
fn ioctls_are_refused_like_a_local_file_system_does() {
    let mut d = Drive::new();
    d.mount();
    let data = test_data(41, 3 * MIB);
    fs::write(d.path("f"), &data).unwrap();
    // cp tries FICLONE first and falls back to a copy on ENOTTY.
    run("cp", &["--reflink=auto", s(&d.path("f")), s(&d.path("g"))], None);
    assert_file(&d.path("g"), &data);
    let lsattr = output_of(Command::new("lsattr").arg(d.path("f")));
    let stderr = String::from_utf8_lossy(&lsattr.stderr);
    // The kernel turns the ENOTTY of an inode-flags ioctl into EOPNOTSUPP.
    assert!(
        !lsattr.status.success() && (stderr.contains("not supported") || stderr.contains("Inappropriate ioctl")),
        "lsattr: {stderr}"
    );
    d.unmount();
    let log = fs::read_to_string(d.home.join("pactfs.log")).unwrap();
    assert!(!log.contains("Not Implemented] ioctl"), "an ioctl reached fuser's default handler:\n{log}");
}

/// fsx (the File System eXerciser, Rust rewrite, `cargo install fsx`;
/// scripts/setup installs it): seeded random reads, writes, mmap reads and
/// writes, truncates, fsyncs, fallocate, hole punching, sendfile, fadvise,
/// copy_file_range and close/reopen, each read checked against fsx's own
/// model of the file. Once on a small file (many operations per chunk)
/// and once on one of several chunks with operations up to 1 MiB; then the
/// store must check clean.
#[test]
fn fsx_random_operations_match_its_model() {
    const OPS: &str = "close_open = 2\nread = 10\nwrite = 10\nmapread = 5\nmapwrite = 5\ninvalidate = 1\n\
        truncate = 2\nfsync = 1\nfdatasync = 1\nposix_fallocate = 1\npunch_hole = 1\nsendfile = 1\n\
        posix_fadvise = 1\ncopy_file_range = 2\n";
    let runs = [("small", 262_144, 65_536, 10_000, 1), ("chunks", 8 * MIB, MIB, 3_000, 2)];
    let work = tempfile::tempdir().unwrap();
    let mut d = Drive::new();
    d.mount();
    for (name, flen, max_op, ops, seed) in runs {
        let config = work.path().join(format!("{name}.toml"));
        fs::write(&config, format!("flen = {flen}\n[opsize]\nmax = {max_op}\n[weights]\n{OPS}")).unwrap();
        let out = output_of(Command::new("fsx").args([
            "-f",
            s(&config),
            "-N",
            &ops.to_string(),
            "-S",
            &seed.to_string(),
            "-P",
            s(work.path()),
            s(&d.path(name)),
        ]));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success() && text.contains("All operations completed A-OK"),
            "fsx {name} (seed {seed}; is fsx installed? scripts/setup does it):\n{text}"
        );
    }
    d.unmount();
    let fsck = d.pactfs(&["fsck"]);
    assert_eq!(fsck.status.code(), Some(0), "fsck after fsx:\n{}", d.last_command());
}
