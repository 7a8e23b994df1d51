"""The account side of IB: positions, account values, P&L, executions and open orders as pandas
DataFrames, kept live from IB's subscriptions.
"""
