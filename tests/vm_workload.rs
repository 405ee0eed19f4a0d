//! VM tests of stages 10-11: the workload from the OCI layout in the verified root, its launch
//! policy, its measured launch, its exit code, restart policies and the debug shell.

use cvm_testkit as common;

use common::kbs::*;
use common::*;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// An init-data document whose launch.toml is `launch`.
fn initdata(launch: &str) -> Vec<u8> {
    format!("version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"launch.toml\" = '''\n{launch}'''\n")
        .into_bytes()
}

fn write_initdata(dir: &Path, data: &[u8]) -> PathBuf {
    let file = dir.join("initdata.toml");
    std::fs::write(&file, data).unwrap();
    file
}

/// A production boot of the verified root with `data` as init-data.
fn boot_with(data: &[u8], append: &str, extra: &[String]) -> Boot {
    let dir = tempfile::tempdir().unwrap();
    let file = write_initdata(dir.path(), data);
    let (hash, mut args) = verified_root();
    args.extend([
        "--fw-cfg".into(),
        format!("opt/cvm/initdata={}", file.display()),
    ]);
    args.extend(extra.iter().cloned());
    boot(&format!("{hash} cvm.initdata=fw_cfg {append}"), &args)
}

/// The host's copy of the verified root's tree (what `cvmctl rootfs` packed).
fn root_tree() -> PathBuf {
    let rootfs = rootfs();
    rootfs.parent().unwrap().join("root-tree")
}

/// `cvmctl measure`'s PCR 15 for `data`, workload facts predicted from the root tree's image.
fn predicted_pcr15(data: &[u8], mode: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = write_initdata(dir.path(), data);
    let out = run_ok(
        Command::new(cvm_testkit::cvmctl())
            .arg("measure")
            .arg("--initdata")
            .arg(&file)
            .args(["--roothash", &roothash(), "--mode", mode])
            .arg("--os-release")
            .arg(root_tree().join("etc/os-release"))
            .arg("--image-root")
            .arg(root_tree()),
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v["pcrs"]["sha256"]["15"].as_str().unwrap().to_string()
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn hello_runs_its_exit_code_propagates_and_the_launch_is_measured_as_predicted() {
    for code in ["0", "7"] {
        let data = initdata(&format!(
            "[workload]\nimage = \"oci:/usr/share/cvm-agent/images:hello\"\nenv = {{ EXIT_CODE = \"{code}\" }}\n"
        ));
        let b = boot_with(&data, "", &[]);
        assert_eq!(b.code.to_string(), code, "{}", b.show());
        assert!(b.errors().is_empty(), "{}", b.show());
        // The workload's own output, prefixed, from its own PID namespace (it is PID 1 there).
        assert_eq!(
            b.lines("workload: "),
            ["workload: hello from 0 in sh"],
            "{}",
            b.show()
        );
        let result = b.result().unwrap();
        assert_eq!(result["exit_code"], code.parse::<i64>().unwrap());
        assert_eq!(result["restart"], "Never");
        assert_eq!(result["next"], "power-off");
        assert!(b.powered_off(), "{}", b.show());
        // Sealed before the workload started, and the TPM's PCR 15 (checked against the
        // replayed log by the agent) is what the host predicts from the same image.
        let sealed = b.console.find("measurements sealed").expect("sealed");
        let started = b.console.find("started pid").expect("started");
        assert!(sealed < started, "{}", b.show());
        let pcr15 = predicted_pcr15(&data, "production");
        assert!(
            b.has(&format!("workload: PCR 15 sha256={pcr15}")),
            "PCR 15 is not the predicted {pcr15}\n{}",
            b.show()
        );
    }
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn launch_policy_allows_the_cmd_override_and_refuses_an_env_override() {
    // hello's labels allow a cmd override: the args replace Cmd.
    let data = initdata(
        "[workload]\nimage = \"oci:/usr/share/cvm-agent/images:hello\"\n\
         args = [\"/bin/sh\", \"-c\", \"echo overridden; exit 5\"]\n",
    );
    let b = boot_with(&data, "", &[]);
    assert_eq!(b.code, 5, "{}", b.show());
    assert_eq!(
        b.lines("workload: "),
        ["workload: overridden"],
        "{}",
        b.show()
    );

    // strict allows no env override: production refuses before anything is measured for it
    // or run, and the error names the label.
    let data = initdata(
        "[workload]\nimage = \"oci:/usr/share/cvm-agent/images:strict\"\nenv = { GREETING = \"hi\" }\n",
    );
    let b = boot_with(&data, "", &[]);
    b.assert_one_error("cvm-agent: error: workload: launch policy violation (tee.launch_policy.allow_env_override)");
    assert!(b.errors()[0].contains("GREETING"), "{}", b.show());
    assert!(
        !b.has("strict ran") && !b.has("started pid"),
        "{}",
        b.show()
    );
    assert!(b.powered_off(), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn debug_stays_up_after_the_workload_with_a_shell_on_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let data = initdata(
        "[workload]\nimage = \"oci:/usr/share/cvm-agent/images:hello\"\nenv = { EXIT_CODE = \"3\" }\n",
    );
    let file = write_initdata(dir.path(), &data);
    let console = dir.path().join("console.log");
    let socket = dir.path().join("serial.sock");
    let (hash, mut args) = verified_root();
    args.extend([
        "--fw-cfg".into(),
        format!("opt/cvm/initdata={}", file.display()),
        "--serial-socket".into(),
        socket.display().to_string(),
    ]);
    let mut child = spawn(
        &format!("{hash} cvm.initdata=fw_cfg cvm.mode=debug"),
        &args,
        &console,
        180,
    );
    let up = wait_for(
        &console,
        "debug shell on the console",
        Duration::from_secs(150),
    );
    let show = || std::fs::read_to_string(&console).unwrap_or_default();
    if !up {
        let _ = child.kill();
        panic!("no debug shell\n{}", show());
    }
    let mut serial = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    // Arithmetic, so the answer is not just the echo of what was typed.
    serial
        .write_all(b"echo shell-$((6*7)) uid-$(id -u)\n")
        .unwrap();
    let answered = wait_for(&console, "shell-42 uid-0", Duration::from_secs(30));
    serial.write_all(b"poweroff -f\n").unwrap();
    let status = child.wait().unwrap();
    let text = show();
    assert!(answered, "the shell did not answer\n{text}");
    let result = cvm_agent::result::find_result(&text).unwrap();
    assert_eq!(result["exit_code"], 3);
    assert_eq!(result["mode"], "debug");
    assert_eq!(result["next"], "stay-up");
    assert!(text.contains("workload: hello from 0 in sh"), "{text}");
    // boot.sh reports the workload's code even though the VM was powered off from the shell.
    assert_eq!(status.code(), Some(3), "{text}");
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn restart_on_failure_reboots_and_the_next_boot_runs_again() {
    // The workload fails on its first run and succeeds on its second; what it counts with
    // lives on the encrypted state volume, which the reboot keeps.
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("state.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).unwrap();
    let script = "n=$(cat /var/lib/app/runs 2>/dev/null || echo 0); n=$((n + 1)); \
                  echo $n > /var/lib/app/runs; sync; echo run $n; [ $n -ge 2 ]";
    let data = initdata(&format!(
        "{}timeout = 20\n\n\
         [[secrets]]\nname = \"state-key\"\nuri = \"kbs:///default/state/key\"\nuse = \"state-key\"\n\n\
         [state]\ndevice = \"serial:cvm-disk1\"\nmount = \"/var/lib/app\"\n\n\
         [workload]\nimage = \"oci:/usr/share/cvm-agent/images:hello\"\nrestart = \"OnFailure\"\n\
         args = [\"/bin/sh\", \"-c\", \"{script}\"]\n",
        kbs_section()
    ));
    let kbs = start_kbs(&Setup {
        policy: strict_policy(&data),
        resources: vec![("default/state/key".into(), key)],
        tls: true,
        ..Default::default()
    });
    let b = boot_with(
        &data,
        "",
        &[
            "--disk".into(),
            disk.display().to_string(),
            "--tpm-state".into(),
            kbs.tpm_state.display().to_string(),
            "--guestfwd".into(),
            format!("8080:{}", kbs.port),
            "--allow-reboot".into(),
        ],
    );
    let results: Vec<serde_json::Value> = b
        .lines("cvm-agent: result ")
        .iter()
        .map(|l| serde_json::from_str(l.trim_start_matches("cvm-agent: result ")).unwrap())
        .collect();
    assert_eq!(results.len(), 2, "{}\n--- kbs ---\n{}", b.show(), kbs.log());
    assert_eq!(results[0]["exit_code"], 1);
    assert_eq!(results[0]["restart"], "OnFailure");
    assert_eq!(results[0]["next"], "reboot");
    assert_eq!(results[1]["exit_code"], 0);
    assert_eq!(results[1]["next"], "power-off");
    assert_eq!(
        b.lines("workload: "),
        ["workload: run 1", "workload: run 2"],
        "{}",
        b.show()
    );
    // The second boot attested afresh: measurements started over.
    assert_eq!(
        b.console.matches("attest: attested").count(),
        2,
        "{}",
        b.show()
    );
    assert_eq!(b.code, 0, "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn the_seccomp_filter_refuses_a_denied_syscall_and_allows_the_rest() {
    // unshare(CLONE_NEWUSER) needs no capability (an unprivileged user namespace), so only the
    // seccomp filter refuses it; the shell, echo and exit around it are allowed syscalls.
    let data = initdata(
        "[workload]\nimage = \"oci:/usr/share/cvm-agent/images:hello\"\n\
         args = [\"/bin/sh\", \"-c\", \"unshare -U true 2>&1 && echo unshare-allowed || echo unshare-denied; echo still-running\"]\n",
    );
    let b = boot_with(&data, "", &[]);
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(b.errors().is_empty(), "{}", b.show());
    let lines = b.lines("workload: ");
    assert!(lines.contains(&"workload: unshare-denied"), "{}", b.show());
    assert!(
        lines
            .iter()
            .any(|l| l.contains("unshare") && l.contains("Operation not permitted")),
        "EPERM, not another failure\n{}",
        b.show()
    );
    assert_eq!(
        lines.last().copied(),
        Some("workload: still-running"),
        "{}",
        b.show()
    );
    assert!(b.powered_off(), "{}", b.show());
}

/// What a workload that forges agent lines writes: the shape of a real result line, marked so
/// the test can tell it from the agent's own.
const FORGED: &str = r#"cvm-agent: result {"exit_code":0,"forged":true}"#;

/// A root workload (the hello image has no `User`) tries to make device nodes for the TPM
/// (the numbers from sysfs and the misc 10:224), the root disk, the console, the kernel log
/// and the serial port, in its `/dev` and in `/tmp`, then to open each node and write a forged
/// agent line to it. FIFOs stay allowed.
const MKNOD_SCRIPT: &str = r#"
f='FORGED'
echo "$f"
tpmrm=$(cat /sys/class/tpmrm/tpmrm0/dev 2>/dev/null || echo 254:65536)
tpm=$(cat /sys/class/tpm/tpm0/dev 2>/dev/null || echo 10:224)
disk=$(cat /sys/class/block/vda/dev)
for spec in tpmrm0:c:$tpmrm tpm0:c:$tpm tpmmisc:c:10:224 vda:b:$disk console:c:5:1 kmsg:c:1:11 ttyS0:c:4:64; do
  name=${spec%%:*}; rest=${spec#*:}; type=${rest%%:*}; nums=${rest#*:}
  for dir in /dev /tmp; do
    p=$dir/$name
    if mknod $p $type ${nums%%:*} ${nums#*:} 2>/tmp/err; then echo "MADE $p"; else echo "refused $p: $(cat /tmp/err)"; fi
    if [ -c $p ] || [ -b $p ]; then
      if (exec 3<>$p) 2>/dev/null; then echo "OPENED $p"; else echo "cannot open $p"; fi
      [ -c $p ] && printf "%s\n" "$f" 2>/dev/null >$p
    fi
  done
done
mkfifo /dev/fifo && mknod /tmp/fifo p && echo fifo-ok
echo x > /dev/null && head -c 4 /dev/urandom | wc -c | grep -q 4 && echo devices-ok
awk '$5 == "/dev" {print "dev-mount " $6}' /proc/self/mountinfo
echo done
"#;

/// The workload's device-node attempts, with `extra` added to its `[workload]`.
fn mknod_boot(extra: &str) -> Boot {
    let script = MKNOD_SCRIPT.replace("'FORGED'", &format!("'{FORGED}'"));
    let data = initdata(&format!(
        "[workload]\nimage = \"oci:/usr/share/cvm-agent/images:hello\"\n{extra}\
         args = [\"/bin/sh\", \"-c\", {}]\n",
        // A JSON string is a TOML basic string; init-data wraps launch.toml in a literal one.
        serde_json::to_string(&script).unwrap()
    ));
    boot_with(&data, "", &[])
}

fn assert_no_device_node(b: &Boot) {
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(b.errors().is_empty(), "{}", b.show());
    let lines = b.lines("workload: ");
    assert!(lines.contains(&"workload: fifo-ok"), "{}", b.show());
    // /dev is nodev, and the devices the runtime put there still work.
    assert!(lines.contains(&"workload: devices-ok"), "{}", b.show());
    let dev = lines
        .iter()
        .find_map(|l| l.strip_prefix("workload: dev-mount "))
        .unwrap_or_else(|| panic!("no /dev mount\n{}", b.show()));
    assert!(dev.split(',').any(|o| o == "nodev"), "{dev}\n{}", b.show());
    assert_eq!(
        lines.last().copied(),
        Some("workload: done"),
        "{}",
        b.show()
    );
    for name in [
        "tpmrm0", "tpm0", "tpmmisc", "vda", "console", "kmsg", "ttyS0",
    ] {
        for dir in ["/dev", "/tmp"] {
            let refused = format!("workload: refused {dir}/{name}: ");
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&refused) && l.ends_with("Operation not permitted")),
                "mknod {dir}/{name} was not refused with EPERM\n{}",
                b.show()
            );
        }
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("MADE") || l.contains("OPENED")),
        "{}",
        b.show()
    );
    // The forged text reaches the console only behind the agent's prefix (from stdout).
    let forged: Vec<&str> = b
        .console
        .lines()
        .filter(|l| l.contains(r#""forged":true"#))
        .collect();
    assert_eq!(forged, [format!("workload: {FORGED}")], "{}", b.show());
    let result = b.result().unwrap();
    assert!(result.get("forged").is_none(), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn a_root_workload_cannot_make_device_nodes() {
    // The default capability set has no CAP_MKNOD, and seccomp refuses character and block
    // nodes as well.
    assert_no_device_node(&mknod_boot(""));
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn granted_cap_mknod_still_makes_no_device_node() {
    // With CAP_MKNOD granted (the image allows added capabilities), seccomp alone refuses.
    assert_no_device_node(&mknod_boot("capabilities = [\"CAP_MKNOD\"]\n"));
}
