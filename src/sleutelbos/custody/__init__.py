"""Key custody: keys made and used inside an HSM over PKCS#11."""
