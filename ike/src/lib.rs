//! strait-ike: an IKEv2 speaker (RFC 7296) as a library, sans-IO like `strait-bgp`.
