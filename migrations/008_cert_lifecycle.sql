-- Certificate lifecycle: per-project device certificate lifetimes, and renewals that devices
-- request with their token and an operator-side signer (`vidsync signer`, where the CA key is)
-- signs. The database never signs: it records requests, hands the signer the devices to sign,
-- and hands each device its newest certificate. device_refresh is left as it is (another
-- migration changes it); the device-facing functions here are separate.

-- NULL: the default, one year, or 30 days once a signer has served the project (it renews them).
ALTER TABLE vidsync.projects
  ADD COLUMN device_cert_seconds integer CHECK (device_cert_seconds IS NULL OR device_cert_seconds BETWEEN 60 AND 1576800000),
  ADD COLUMN signer_seen_at timestamptz;

CREATE TABLE vidsync.renewal_requests (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  device_id bigint NOT NULL REFERENCES vidsync.devices (id) ON DELETE CASCADE,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'signed', 'refused')),
  -- The certificate the device held when it asked: a signer signs its registered key again.
  fingerprint text,
  reason text,
  requested_at timestamptz NOT NULL DEFAULT now(),
  decided_at timestamptz
);
-- At most one open request per device: asking again while one is open returns it.
CREATE UNIQUE INDEX renewal_requests_pending ON vidsync.renewal_requests (device_id) WHERE status = 'pending';

-- The lifetime new device certificates of the project get, and whether it is the default.
CREATE FUNCTION vidsync.project_cert_lifetime(p_project text)
RETURNS TABLE (device_cert_seconds integer, configured boolean, signer boolean)
LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT coalesce(p.device_cert_seconds, CASE WHEN p.signer_seen_at IS NULL THEN 31536000 ELSE 2592000 END),
         p.device_cert_seconds IS NOT NULL, p.signer_seen_at IS NOT NULL
    FROM vidsync.projects p WHERE p.id = vidsync.project_id(p_project);
$$;

-- Sets the project's device certificate lifetime; NULL goes back to the default.
CREATE FUNCTION vidsync.set_cert_lifetime(p_project text, p_seconds integer)
RETURNS TABLE (device_cert_seconds integer, configured boolean, signer boolean)
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_id bigint := vidsync.project_id(p_project);
BEGIN
  IF p_seconds IS NOT NULL AND (p_seconds < 60 OR p_seconds > 1576800000) THEN
    RAISE EXCEPTION 'a certificate lifetime must be between 1 minute and 50 years, not % seconds', p_seconds USING ERRCODE = 'VS400';
  END IF;
  UPDATE vidsync.projects p SET device_cert_seconds = p_seconds WHERE p.id = v_id;
  PERFORM vidsync.audit('project.cert_lifetime', v_id, NULL, NULL, jsonb_build_object('device_cert_seconds', p_seconds));
  RETURN QUERY SELECT * FROM vidsync.project_cert_lifetime(p_project);
END $$;

-- The active device behind a device token, or an error a device can act on (certificates, folders).
CREATE FUNCTION vidsync.active_device_by_token(p_token text) RETURNS vidsync.devices
LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  v_request vidsync.join_requests := vidsync.join_request_by_token(p_token);
  v_device vidsync.devices;
BEGIN
  SELECT * INTO v_device FROM vidsync.devices d WHERE d.id = v_request.device_id;
  IF v_request.status <> 'approved' OR v_device.status IS DISTINCT FROM 'active' THEN
    RAISE EXCEPTION 'this device is %: it gets no new certificate and no folders', CASE WHEN v_request.status <> 'approved' THEN v_request.status ELSE coalesce(v_device.status, 'released') END USING ERRCODE = 'VS409';
  END IF;
  RETURN v_device;
END $$;

-- Device-facing: asks for a new certificate for the device's registered key. Idempotent while a
-- request is open.
CREATE FUNCTION vidsync.device_request_renewal(p_token text, p_fingerprint text DEFAULT NULL)
RETURNS TABLE (request_id bigint, status text, requested_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_device vidsync.devices := vidsync.active_device_by_token(p_token);
  v_id bigint;
BEGIN
  IF p_fingerprint IS NOT NULL AND p_fingerprint !~ '^[0-9a-f]{64}$' THEN
    RAISE EXCEPTION 'a certificate fingerprint is 64 hex digits' USING ERRCODE = 'VS400';
  END IF;
  SELECT r.id INTO v_id FROM vidsync.renewal_requests r WHERE r.device_id = v_device.id AND r.status = 'pending';
  IF v_id IS NULL THEN
    INSERT INTO vidsync.renewal_requests (device_id, fingerprint) VALUES (v_device.id, p_fingerprint)
    ON CONFLICT (device_id) WHERE status = 'pending' DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
      SELECT r.id INTO v_id FROM vidsync.renewal_requests r WHERE r.device_id = v_device.id AND r.status = 'pending';
    ELSE
      PERFORM vidsync.audit('cert.renewal_request', v_device.project_id, v_device.id, v_device.ip, jsonb_build_object('device', v_device.name));
    END IF;
  END IF;
  RETURN QUERY SELECT r.id, r.status, r.requested_at FROM vidsync.renewal_requests r WHERE r.id = v_id;
END $$;

-- Device-facing: the device's newest certificate and whether a renewal is still open.
CREATE FUNCTION vidsync.device_certificate(p_token text)
RETURNS TABLE (fingerprint text, not_after timestamptz, pem text, renewal_pending boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT c.fingerprint, c.not_after, c.pem,
         EXISTS (SELECT 1 FROM vidsync.renewal_requests r WHERE r.device_id = d.id AND r.status = 'pending')
    FROM vidsync.active_device_by_token(p_token) d
    LEFT JOIN LATERAL (SELECT c.fingerprint, c.not_after, c.pem FROM vidsync.certificates c
                        WHERE c.device_id = d.id ORDER BY c.issued_at DESC, c.id DESC LIMIT 1) c ON true;
$$;

-- Device-facing: the Syncthing IDs of the project's revoked devices, which every peer's `up` loop
-- removes from its Syncthing (devices and folder shares): nebula's blocklist stops the tunnel,
-- this stops Syncthing from keeping the device and its shares.
CREATE FUNCTION vidsync.device_revoked_peers(p_token text)
RETURNS TABLE (device text, syncthing_id text, revoked_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT d.name, d.syncthing_id, d.revoked_at
    FROM vidsync.active_device_by_token(p_token) me
    JOIN vidsync.devices d ON d.project_id = me.project_id
   WHERE d.revoked_at IS NOT NULL AND d.syncthing_id IS NOT NULL AND d.id <> me.id
   ORDER BY d.revoked_at, d.name;
$$;

-- Operator (the signer): records that a signer serves the project and lists the open renewals
-- of its active, non-revoked devices with what to sign.
CREATE FUNCTION vidsync.signer_pending(p_project text)
RETURNS TABLE (request_id bigint, device text, ip inet, prefix_length integer, groups text[], public_key text, lifetime_seconds integer, requested_at timestamptz)
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
BEGIN
  UPDATE vidsync.projects p SET signer_seen_at = now() WHERE p.id = v_id;
  RETURN QUERY
  SELECT r.id, d.name, d.ip, masklen(p.cidr), d.groups, d.public_key, l.device_cert_seconds, r.requested_at
    FROM vidsync.renewal_requests r
    JOIN vidsync.devices d ON d.id = r.device_id
    JOIN vidsync.projects p ON p.id = d.project_id
   CROSS JOIN vidsync.project_cert_lifetime(p_project) l
   WHERE d.project_id = v_id AND r.status = 'pending' AND d.status = 'active' AND d.revoked_at IS NULL AND d.public_key IS NOT NULL
   ORDER BY r.requested_at, r.id;
END $$;

-- Operator (the signer): records the certificate signed for a renewal. The device row is locked,
-- so a revocation either came first (the renewal is refused: a row with a NULL fingerprint) or comes after (the new certificate
-- is on the blocklist with the others): revocation wins either way.
CREATE FUNCTION vidsync.complete_renewal(p_request_id bigint, p_fingerprint text, p_not_after timestamptz, p_pem text)
RETURNS TABLE (device text, fingerprint text, not_after timestamptz)
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_request vidsync.renewal_requests;
  v_device vidsync.devices;
BEGIN
  SELECT * INTO v_request FROM vidsync.renewal_requests r WHERE r.id = p_request_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no renewal request %', p_request_id USING ERRCODE = 'VS404';
  END IF;
  SELECT * INTO v_device FROM vidsync.devices d WHERE d.id = v_request.device_id FOR UPDATE;
  IF v_request.status <> 'pending' THEN
    RAISE EXCEPTION 'renewal request % is already %', p_request_id, v_request.status USING ERRCODE = 'VS409';
  END IF;
  IF v_device.status <> 'active' OR v_device.revoked_at IS NOT NULL THEN
    -- A row, not an error: the refusal stays recorded (an exception would roll it back).
    UPDATE vidsync.renewal_requests r SET status = 'refused', reason = 'device ' || v_device.status, decided_at = now() WHERE r.id = p_request_id;
    PERFORM vidsync.audit('cert.renew_refused', v_device.project_id, v_device.id, v_device.ip,
      jsonb_build_object('device', v_device.name, 'status', v_device.status, 'request', p_request_id));
    RETURN QUERY SELECT v_device.name, NULL::text, NULL::timestamptz;
    RETURN;
  END IF;
  INSERT INTO vidsync.certificates (device_id, fingerprint, not_after, pem) VALUES (v_device.id, p_fingerprint, p_not_after, p_pem);
  UPDATE vidsync.renewal_requests r SET status = 'signed', decided_at = now() WHERE r.id = p_request_id;
  PERFORM vidsync.audit('cert.renew', v_device.project_id, v_device.id, v_device.ip,
    jsonb_build_object('device', v_device.name, 'fingerprint', p_fingerprint, 'not_after', p_not_after, 'request', p_request_id));
  RETURN QUERY SELECT v_device.name, p_fingerprint, p_not_after;
END $$;

-- Grants as in 003 and 006: operator functions for service_role only, device-facing ones for anon.
REVOKE ALL ON vidsync.renewal_requests FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON vidsync.renewal_requests TO service_role;
ALTER TABLE vidsync.renewal_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_role_all ON vidsync.renewal_requests TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON SEQUENCE vidsync.renewal_requests_id_seq FROM PUBLIC, anon, authenticated;
GRANT USAGE, SELECT ON SEQUENCE vidsync.renewal_requests_id_seq TO service_role;
REVOKE ALL ON FUNCTION vidsync.project_cert_lifetime(text), vidsync.set_cert_lifetime(text, integer), vidsync.active_device_by_token(text),
  vidsync.device_request_renewal(text, text), vidsync.device_certificate(text), vidsync.signer_pending(text),
  vidsync.complete_renewal(bigint, text, timestamptz, text), vidsync.device_revoked_peers(text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION vidsync.project_cert_lifetime(text), vidsync.set_cert_lifetime(text, integer), vidsync.active_device_by_token(text),
  vidsync.device_request_renewal(text, text), vidsync.device_certificate(text), vidsync.signer_pending(text),
  vidsync.complete_renewal(bigint, text, timestamptz, text), vidsync.device_revoked_peers(text) TO service_role;
GRANT EXECUTE ON FUNCTION vidsync.device_request_renewal(text, text), vidsync.device_certificate(text), vidsync.device_revoked_peers(text) TO anon;
