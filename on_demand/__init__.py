"""On-demand (request-time) feature views: Python functions of stored features and request fields.

Each function here, declared with `@skewless.on_demand_view`, is the single implementation used
by training (`get_historical_features`) and serving (`get_online_features`, HTTP). See the README,
"On-demand features".
"""
