<?php
// opsctl lab application: an order that calls a downstream service half way.
// It appends "begin <id>" before and "commit <id>" after the call, so a request that is
// cut in the middle (a worker killed by SIGTERM) leaves a begin without its commit.
$ms = isset($_GET['ms']) ? max(0, min(600000, (int)$_GET['ms'])) : 300;
$id = $_POST['id'] ?? $_GET['id'] ?? bin2hex(random_bytes(8));
$id = preg_replace('/[^A-Za-z0-9_.-]/', '', (string)$id);
$log = '/var/lib/opsctl-lab/orders.log';
file_put_contents($log, "begin $id\n", FILE_APPEND);
usleep($ms * 1000);
file_put_contents($log, "commit $id\n", FILE_APPEND);
header('Content-Type: text/plain');
echo "committed ", $id, " ", gethostname(), "\n";
