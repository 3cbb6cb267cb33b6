

def test_the_peers_file_shares_the_rule(tmp_path):
    p = gateway(tmp_path, "ListenPort = 51901")
    p.write_text(p.read_text().replace("ListenPort = 51900\n", ""))
    (tmp_path / "peers.conf").write_text(f"[Peer]\nPublicKey {SECRET}\nAllowedIP = 10.99.0.2/32\n")
    with pytest.raises(ConfigError) as e:
        load_gateway_config(p)
    assert_hidden(str(e.value))
    assert "peers.conf:2: PublicKey…" in str(e.value)
