"""Package database readers (RPM sqlite/BDB/ndb, dpkg) behind one Protocol."""
