// Tests of common/staleness_config: the staleness rules' defaults, bounds,
// which settings each rule reads, and the names people type.
#include "common/staleness_config.h"

#include <cmath>
#include <string>

#include "common/optimizer_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using ::testing::HasSubstr;

// A status with code `code` whose message matches `message`.
MATCHER_P2(StatusIs, code, message, "") {
  const absl::Status& s = arg;
  return s.code() == code &&
         ::testing::ExplainMatchResult(message, std::string(s.message()),
                                       result_listener);
}

v1::NamespaceConfig Config(v1::Compensation c, v1::Consistency k) {
  v1::NamespaceConfig config;
  config.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  config.set_compensation(c);
  config.set_consistency(k);
  return config;
}

TEST(NormalizeStaleness, FillsTheDefaultsOfEachRule) {
  v1::NamespaceConfig c = Config(v1::COMPENSATION_UNSPECIFIED,
                                 v1::CONSISTENCY_UNSPECIFIED);
  ASSERT_OK(NormalizeStaleness(&c));
  EXPECT_EQ(c.compensation(), v1::COMPENSATION_NONE);
  EXPECT_EQ(c.consistency(), v1::CONSISTENCY_ASYNC);
  EXPECT_EQ(c.staleness().ssp_bound(), 2);
  EXPECT_EQ(c.staleness().backup_workers(), 0);

  v1::NamespaceConfig dc = Config(v1::COMPENSATION_DCASGD_C,
                                  v1::CONSISTENCY_ASYNC);
  ASSERT_OK(NormalizeStaleness(&dc));
  EXPECT_FLOAT_EQ(dc.staleness().dc_lambda(), 0.04f);
  v1::NamespaceConfig da = Config(v1::COMPENSATION_DCASGD_A,
                                  v1::CONSISTENCY_ASYNC);
  ASSERT_OK(NormalizeStaleness(&da));
  EXPECT_FLOAT_EQ(da.staleness().dc_lambda(), 2.0f);
  EXPECT_FLOAT_EQ(da.staleness().dc_momentum(), 0.95f);
  EXPECT_FLOAT_EQ(da.staleness().dc_epsilon(), 1e-7f);
  v1::NamespaceConfig gem = Config(v1::COMPENSATION_GEM, v1::CONSISTENCY_SSP);
  ASSERT_OK(NormalizeStaleness(&gem));
  EXPECT_FLOAT_EQ(gem.staleness().gem_momentum(), 0.9f);
  EXPECT_FLOAT_EQ(gem.staleness().gem_kappa(), 1.0f);
  EXPECT_FLOAT_EQ(gem.staleness().gem_epsilon(), 1e-12f);
}

TEST(NormalizeStaleness, RefusesBadSettingsNamingTheField) {
  struct Case {
    v1::Compensation c;
    v1::Consistency k;
    void (*set)(v1::StalenessSettings*);
    const char* field;
  };
  const Case cases[] = {
      {v1::COMPENSATION_DCASGD_C, v1::CONSISTENCY_ASYNC,
       [](v1::StalenessSettings* s) { s->set_dc_lambda(-0.1f); }, "dc_lambda"},
      {v1::COMPENSATION_DCASGD_A, v1::CONSISTENCY_ASYNC,
       [](v1::StalenessSettings* s) { s->set_dc_momentum(1.0f); },
       "dc_momentum"},
      {v1::COMPENSATION_DCASGD_A, v1::CONSISTENCY_ASYNC,
       [](v1::StalenessSettings* s) { s->set_dc_epsilon(0.0f); }, "dc_epsilon"},
      {v1::COMPENSATION_GEM, v1::CONSISTENCY_ASYNC,
       [](v1::StalenessSettings* s) { s->set_gem_kappa(0.0f); }, "gem_kappa"},
      {v1::COMPENSATION_GEM, v1::CONSISTENCY_ASYNC,
       [](v1::StalenessSettings* s) { s->set_gem_kappa(-1.0f); }, "gem_kappa"},
      {v1::COMPENSATION_GEM, v1::CONSISTENCY_ASYNC,
       [](v1::StalenessSettings* s) { s->set_gem_momentum(NAN); },
       "gem_momentum"},
      {v1::COMPENSATION_NONE, v1::CONSISTENCY_SSP,
       [](v1::StalenessSettings* s) { s->set_ssp_bound(-1); }, "ssp_bound"},
      {v1::COMPENSATION_NONE, v1::CONSISTENCY_SYNC,
       [](v1::StalenessSettings* s) { s->set_backup_workers(-2); },
       "backup_workers"},
  };
  for (const Case& k : cases) {
    v1::NamespaceConfig c = Config(k.c, k.k);
    k.set(c.mutable_staleness());
    absl::Status s = NormalizeStaleness(&c);
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                            HasSubstr(k.field)))
        << k.field;
    // NormalizeConfig, what Declare and SetConfig run, refuses the same.
    v1::NamespaceConfig again = Config(k.c, k.k);
    k.set(again.mutable_staleness());
    EXPECT_THAT(NormalizeConfig(again).status(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(k.field)));
  }
}

TEST(NormalizeStaleness, UnreadSettingsAreNotChecked) {
  // A bad dc_lambda means nothing to gem: NormalizeStaleness leaves it, and
  // CheckStalenessSettingsUsed refuses it where a request sets it.
  v1::NamespaceConfig c = Config(v1::COMPENSATION_GEM, v1::CONSISTENCY_ASYNC);
  c.mutable_staleness()->set_dc_lambda(-1);
  EXPECT_OK(NormalizeStaleness(&c));
  EXPECT_THAT(CheckStalenessSettingsUsed(c.staleness(), c.compensation(),
                                         c.consistency()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'dc_lambda' is not read by compensation "
                                 "gem")));
  v1::StalenessSettings ok;
  ok.set_gem_kappa(2);
  ok.set_ssp_bound(0);
  EXPECT_OK(CheckStalenessSettingsUsed(ok, v1::COMPENSATION_GEM,
                                       v1::CONSISTENCY_SSP));
  EXPECT_THAT(CheckStalenessSettingsUsed(ok, v1::COMPENSATION_GEM,
                                         v1::CONSISTENCY_SYNC),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("ssp_bound")));
}

TEST(NormalizeStaleness, SyncRefusesAPerWorkerCompensation) {
  for (v1::Compensation c : {v1::COMPENSATION_DCASGD_C,
                             v1::COMPENSATION_DCASGD_A, v1::COMPENSATION_GEM}) {
    v1::NamespaceConfig config = Config(c, v1::CONSISTENCY_SYNC);
    EXPECT_THAT(NormalizeStaleness(&config),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("cannot go with consistency sync")));
  }
  v1::NamespaceConfig inverse =
      Config(v1::COMPENSATION_INVERSE, v1::CONSISTENCY_SYNC);
  EXPECT_OK(NormalizeStaleness(&inverse));
}

TEST(NormalizeStaleness, UnknownEnumValuesAreInvalidArgument) {
  v1::NamespaceConfig c = Config(static_cast<v1::Compensation>(42),
                                 v1::CONSISTENCY_ASYNC);
  EXPECT_THAT(NormalizeStaleness(&c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("compensation 42 is not known")));
  c = Config(v1::COMPENSATION_NONE, static_cast<v1::Consistency>(9));
  EXPECT_THAT(NormalizeStaleness(&c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("consistency 9 is not known")));
}

TEST(ParseStalenessNames, RoundTripAndRefuseNonsense) {
  for (const char* name : {"none", "inverse", "dcasgd-c", "dcasgd-a", "gem"}) {
    v1::Compensation c;
    ASSERT_OK(ParseCompensation(name, &c));
    EXPECT_EQ(CompensationName(c), name);
  }
  v1::Compensation c;
  EXPECT_THAT(ParseCompensation("dcasgd", &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("dcasgd-c, dcasgd-a or gem")));
  for (const char* name : {"async", "ssp:0", "ssp:3", "sync", "sync:1"}) {
    v1::NamespaceConfig config;
    ASSERT_OK(ParseConsistency(name, &config));
    EXPECT_EQ(ConsistencyName(config), name);
  }
  v1::NamespaceConfig config;
  ASSERT_OK(ParseConsistency("ssp", &config));
  EXPECT_FALSE(config.staleness().has_ssp_bound());
  for (const char* bad : {"ssp:-1", "ssp:x", "sync:", "async:1", "bsp"}) {
    v1::NamespaceConfig ignored;
    EXPECT_THAT(ParseConsistency(bad, &ignored),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")))
        << bad;
  }
}

TEST(ClearUnusedStaleness, KeepsOnlyWhatTheRulesRead) {
  v1::NamespaceConfig c = Config(v1::COMPENSATION_GEM, v1::CONSISTENCY_SSP);
  ASSERT_OK(NormalizeStaleness(&c));
  ClearUnusedStaleness(&c);
  EXPECT_TRUE(c.staleness().has_gem_kappa());
  EXPECT_TRUE(c.staleness().has_ssp_bound());
  EXPECT_FALSE(c.staleness().has_dc_lambda());
  EXPECT_FALSE(c.staleness().has_backup_workers());
  EXPECT_OK(CheckStalenessSettingsUsed(c.staleness(), c.compensation(),
                                       c.consistency()));
}

TEST(DescribeStaleness, ShowsTheRulesAndTheirSettings) {
  v1::NamespaceConfig c = Config(v1::COMPENSATION_DCASGD_C,
                                 v1::CONSISTENCY_SSP);
  c.mutable_staleness()->set_ssp_bound(3);
  ASSERT_OK(NormalizeStaleness(&c));
  EXPECT_EQ(DescribeStaleness(c),
            " compensation=dcasgd-c dc_lambda=0.04 consistency=ssp:3");
}

}  // namespace
}  // namespace pskit
