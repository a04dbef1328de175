#!/usr/bin/python3
"""Independent ESP oracle for esp/tests/userspace_privileged.rs: decrypt and verify
the ICV of every UDP-4500-encapsulated ESP packet in a pcap with scapy's
SecurityAssociation, keyed from Wireshark esp_sa lines (strait's test key log).

usage: scapy_esp_verify.py PCAP ESP_SA_FILE
prints one line per ESP packet and a final "N verified, M failed"; exits 0 iff every
ESP packet verified and there was at least one."""
import csv
import sys

from scapy.all import IP, UDP, rdpcap
from scapy.layers.ipsec import ESP, SecurityAssociation

CIPHERS = {"AES-GCM with 16 octet ICV [RFC4106]": "AES-GCM"}

sas = {}
for row in csv.reader(open(sys.argv[2])):
    family, src, dst, spi, cipher, key, _auth, _auth_key = row[:8]
    sas[int(spi, 16)] = SecurityAssociation(
        ESP,
        spi=int(spi, 16),
        crypt_algo=CIPHERS[cipher],
        crypt_key=bytes.fromhex(key[2:]),
        tunnel_header=IP(src=src, dst=dst),
    )

verified = failed = 0
for n, pkt in enumerate(rdpcap(sys.argv[1]), 1):
    if IP not in pkt or UDP not in pkt[IP] or pkt[UDP].dport != 4500:
        continue
    payload = bytes(pkt[UDP].payload)
    # RFC 3948: a keepalive, or IKE behind the non-ESP marker.
    if len(payload) < 8 or payload[:4] == b"\0\0\0\0":
        continue
    esp = IP(bytes(IP(src=pkt[IP].src, dst=pkt[IP].dst, proto=50) / ESP(payload)))
    spi, seq = esp[ESP].spi, esp[ESP].seq
    try:
        inner = sas[spi].decrypt(esp)
        verified += 1
        print(f"pkt {n}: spi=0x{spi:08x} seq={seq} OK {inner.summary()}")
    except Exception as e:  # scapy raises on a bad ICV; any failure counts
        failed += 1
        print(f"pkt {n}: spi=0x{spi:08x} seq={seq} FAIL {type(e).__name__}: {e}")
print(f"{verified} verified, {failed} failed")
sys.exit(0 if failed == 0 and verified > 0 else 1)
