#include "tests/testing/test_database.h"

#include <cstdlib>
#include <exception>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/ids.h"
#include "gtest/gtest.h"

namespace reptrace::testing {

TestDatabase::TestDatabase() {
  const char* admin = std::getenv("REPTRACE_TEST_PG");
  if (admin == nullptr || *admin == '\0') {
    ADD_FAILURE() << "REPTRACE_TEST_PG is not set: run the tests with tests/run_all.sh, "
                     "or set it to an admin conninfo of a PostgreSQL you may create "
                     "databases on";
    return;
  }
  admin_conninfo_ = admin;
  name_ = absl::StrCat("reptrace_test_", FormatId(NewRandomId()));
  try {
    pqxx::connection conn(admin_conninfo_);
    pqxx::nontransaction tx(conn);
    // The name is ours (hex digits only), so pasting it is safe.
    tx.exec0(absl::StrCat("CREATE DATABASE ", name_));
  } catch (const std::exception& e) {
    ADD_FAILURE() << "cannot create test database: " << e.what();
    return;
  }
  conninfo_ = absl::StrCat(admin_conninfo_, " dbname=", name_);
}

TestDatabase::~TestDatabase() {
  if (conninfo_.empty()) return;
  try {
    pqxx::connection conn(admin_conninfo_);
    pqxx::nontransaction tx(conn);
    tx.exec0(absl::StrCat("DROP DATABASE IF EXISTS ", name_, " WITH (FORCE)"));
  } catch (const std::exception& e) {
    ADD_FAILURE() << "cannot drop test database " << name_ << ": " << e.what();
  }
}

}  // namespace reptrace::testing
